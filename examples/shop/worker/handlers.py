"""The handlers: each reads its row fresh, skips what is already done (a job runs at least
once), performs its side effect and records that it did.

They are methods of :class:`Handlers`, which holds what they use (sessions, a mailer), so that
tests build one on their own database and SMTP server.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conveyor import JobContext, Permanent, Queue, Worker
from examples.shop import jobs
from examples.shop.models import (
    AuditEntry,
    Invitation,
    LoginSession,
    Order,
    PasswordReset,
    User,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from examples.shop.worker.mail import Mailer
from examples.shop.worker.signing import SIGNATURE_HEADER, sign


class WebhookUnavailable(Exception):
    """The endpoint answered 5xx or 429, or could not be reached: retried with backoff."""


class Handlers:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], mailer: Mailer) -> None:
        self.sessions = sessions
        self.mailer = mailer

    async def send_invite(self, payload: jobs.SendInvite, ctx: JobContext) -> str:
        async with self.sessions() as session:
            invitation = await session.get(Invitation, payload.invitation_id)
            if invitation is None:
                raise Permanent(f"invitation {payload.invitation_id} does not exist")
            if invitation.email_sent_at is not None:
                return "already sent"
            await self.mailer.send(
                self.mailer.message(
                    to=invitation.email,
                    subject=f"{invitation.inviter} invited you to the shop",
                    body="Follow the link to create your account.",
                    message_id=f"invite-{invitation.id}",
                )
            )
            invitation.email_sent_at = utcnow()
            await session.commit()
            return f"sent to {invitation.email}"

    async def send_password_reset(self, payload: jobs.SendPasswordReset, ctx: JobContext) -> str:
        async with self.sessions() as session:
            reset = await session.get(PasswordReset, payload.reset_id)
            if reset is None:
                raise Permanent(f"password reset {payload.reset_id} does not exist")
            if reset.email_sent_at is not None:
                return "already sent"
            user = await session.get_one(User, reset.user_id)
            await self.mailer.send(
                self.mailer.message(
                    to=user.email,
                    subject="Reset your password",
                    body=f"Your reset code: {reset.token}",
                    message_id=f"reset-{reset.id}",
                )
            )
            reset.email_sent_at = utcnow()
            await session.commit()
            return f"sent to {user.email}"

    async def send_order_confirmation(
        self, payload: jobs.SendOrderConfirmation, ctx: JobContext
    ) -> str:
        async with self.sessions() as session:
            order = await session.get(Order, payload.order_id)
            if order is None:
                raise Permanent(f"order {payload.order_id} does not exist")
            if order.confirmation_sent_at is not None:
                return "already sent"
            await self.mailer.send(
                self.mailer.message(
                    to=order.email,
                    subject=f"Order #{order.id} confirmed",
                    body=f"Total: {order.total_cents / 100:.2f}",
                    message_id=f"order-{order.id}",
                )
            )
            order.confirmation_sent_at = utcnow()
            await session.commit()
            return f"sent to {order.email}"

    async def deliver_webhook(self, payload: jobs.DeliverWebhook, ctx: JobContext) -> int:
        async with self.sessions() as session:
            delivery = await session.get(WebhookDelivery, payload.delivery_id)
            if delivery is None:
                raise Permanent(f"webhook delivery {payload.delivery_id} does not exist")
            if delivery.status == "delivered":
                return 200
            endpoint = await session.get_one(WebhookEndpoint, delivery.endpoint_id)
            if not endpoint.active:
                raise jobs.EndpointGone(f"{endpoint.url} was disabled after a 410 Gone")
            body = json.dumps(
                {"id": str(delivery.id), "event": delivery.event, "data": delivery.body},
                separators=(",", ":"),
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "Shop-Delivery": str(delivery.id),
                SIGNATURE_HEADER: sign(endpoint.secret, body),
            }
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    response = await client.post(endpoint.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                raise WebhookUnavailable(f"{endpoint.url}: {exc!r}") from exc
            if response.status_code == 410:
                # Stop sending this endpoint anything; the job fails at once (permanent=).
                endpoint.active = False
                delivery.status = "gone"
                await session.commit()
                raise jobs.EndpointGone(f"{endpoint.url} answered 410 Gone")
            if response.status_code == 429 or response.status_code >= 500:
                raise WebhookUnavailable(f"{endpoint.url} answered {response.status_code}")
            if response.status_code >= 400:
                raise Permanent(f"{endpoint.url} refused the delivery: {response.status_code}")
            delivery.status = "delivered"
            delivery.delivered_at = utcnow()
            await session.commit()
            return response.status_code

    async def write_audit(self, payload: jobs.WriteAudit, ctx: JobContext) -> None:
        async with self.sessions() as session:
            if await session.get(AuditEntry, payload.event_id) is not None:
                return  # written by an earlier attempt
            session.add(
                AuditEntry(
                    event_id=payload.event_id,
                    actor=payload.actor,
                    action=payload.action,
                    subject=payload.subject,
                    at=utcnow(),
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                return  # another attempt wrote it meanwhile: done all the same

    async def clean_expired_sessions(
        self, payload: jobs.CleanExpiredSessions, ctx: JobContext
    ) -> int:
        """Deletes a batch of expired sessions and audits it, in one transaction."""
        async with self.sessions() as session, session.begin():
            expired = select(LoginSession.token).where(LoginSession.expires_at < utcnow())
            tokens = list((await session.scalars(expired.limit(payload.batch_size))).all())
            if not tokens:
                return 0
            await session.execute(delete(LoginSession).where(LoginSession.token.in_(tokens)))
            session.add(
                AuditEntry(
                    event_id=_event_id(ctx.job_id),
                    actor="worker",
                    action="sessions.cleaned",
                    subject=f"{len(tokens)} expired",
                    at=utcnow(),
                )
            )
            return len(tokens)


def _event_id(job_id: str) -> uuid.UUID:
    """One audit row per job, however often it runs: its id derives from the job's."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor-job:{job_id}")


def build_worker(
    queue: Queue, handlers: Handlers, *, session_cleanup_every: timedelta, concurrency: int = 10
) -> Worker:
    """The worker: every definition of ``jobs`` with its handler, and the clean-up schedule."""
    worker = Worker(queue, jobs=jobs, concurrency=concurrency)
    worker.register(jobs.send_invite, handlers.send_invite)
    worker.register(jobs.send_password_reset, handlers.send_password_reset)
    worker.register(jobs.send_order_confirmation, handlers.send_order_confirmation)
    worker.register(jobs.deliver_webhook, handlers.deliver_webhook)
    worker.register(jobs.write_audit, handlers.write_audit)
    worker.register(jobs.clean_expired_sessions, handlers.clean_expired_sessions)
    # Each tick runs once however many workers declare it; skipped while the last one runs.
    worker.every(
        session_cleanup_every,
        jobs.clean_expired_sessions,
        jobs.CleanExpiredSessions(),
        overlap="skip",
    )
    return worker
