"""The API's endpoints. Every endpoint that starts work writes its row and enqueues its job in
one transaction, with ``enqueue(..., connection=session)``: the job exists if and only if the
row was committed, so an endpoint that fails after enqueuing (a duplicate invitation) leaves no
job behind.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor import Queue
from conveyor.fastapi import QueueDep
from examples.shop import jobs
from examples.shop.api import schemas
from examples.shop.models import (
    AuditEntry,
    Database,
    Invitation,
    LoginSession,
    Order,
    PasswordReset,
    User,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)

router = APIRouter()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session of the app's database for one request: rolled back at the end unless the
    endpoint committed."""
    database: Database = request.app.state.database
    async with database.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def audit(queue: Queue, session: AsyncSession, actor: str, action: str, subject: str) -> str:
    """Enqueues the audit write in the caller's transaction: audited if and only if it happened."""
    handle = await queue.enqueue(
        jobs.write_audit,
        jobs.WriteAudit(event_id=uuid.uuid4(), actor=actor, action=action, subject=subject),
        connection=session,
    )
    return handle.id


async def user_by_email(session: AsyncSession, email: str) -> User:
    user = await session.scalar(select(User).where(User.email == email))
    if user is None:
        raise HTTPException(404, f"no user with email {email}")
    return user


@router.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@router.post("/users", status_code=201)
async def create_user(
    body: schemas.NewUser, session: SessionDep, queue: QueueDep
) -> schemas.CreatedUser:
    user = User(email=body.email)
    session.add(user)
    await session.flush()  # assigns user.id
    await audit(queue, session, "api", "user.created", str(user.id))
    await session.commit()
    return schemas.CreatedUser(id=user.id)


@router.post("/sessions", status_code=201)
async def create_login_session(
    body: schemas.NewLoginSession, session: SessionDep
) -> schemas.CreatedLoginSession:
    user = await user_by_email(session, body.email)
    login = LoginSession(
        token=secrets.token_hex(16),
        user_id=user.id,
        expires_at=utcnow() + timedelta(seconds=body.ttl_seconds),
    )
    session.add(login)
    await session.commit()
    return schemas.CreatedLoginSession(token=login.token)


@router.get("/sessions/{token}")
async def get_login_session(token: str, session: SessionDep) -> dict[str, bool]:
    """An expired session stays (and says it is not valid) until the clean-up deletes it."""
    login = await session.get(LoginSession, token)
    if login is None:
        raise HTTPException(404, "no such session")
    return {"valid": login.expires_at > utcnow()}


@router.post("/invitations", status_code=201)
async def create_invitation(
    body: schemas.NewInvitation, session: SessionDep, queue: QueueDep
) -> schemas.CreatedInvitation:
    invitation = Invitation(id=uuid.uuid4(), email=body.email, inviter=body.inviter)
    session.add(invitation)
    handle = await queue.enqueue(
        jobs.send_invite,
        jobs.SendInvite(invitation_id=invitation.id),
        job_id=f"invite-email:{invitation.id}",  # a retried enqueue would find this job
        connection=session,  # written in this session's transaction
    )
    await audit(queue, session, body.inviter, "invitation.created", body.email)
    try:
        # The invitation is inserted here, after its jobs: a second invitation to one address
        # breaks the unique constraint, the transaction rolls back, and the jobs with it.
        await session.commit()
    except IntegrityError:
        raise HTTPException(409, f"{body.email} is already invited") from None
    return schemas.CreatedInvitation(id=invitation.id, job_id=handle.id)


@router.post("/password-resets", status_code=202)
async def request_password_reset(
    body: schemas.NewPasswordReset, session: SessionDep, queue: QueueDep
) -> schemas.CreatedPasswordReset:
    """Each request is a new reset with a new code, so a new job (no job_id to dedup on)."""
    user = await user_by_email(session, body.email)
    reset = PasswordReset(id=uuid.uuid4(), user_id=user.id, token=secrets.token_hex(4))
    session.add(reset)
    handle = await queue.enqueue(
        jobs.send_password_reset, jobs.SendPasswordReset(reset_id=reset.id), connection=session
    )
    await audit(queue, session, body.email, "password_reset.requested", str(reset.id))
    await session.commit()
    return schemas.CreatedPasswordReset(id=reset.id, job_id=handle.id)


@router.post("/orders", status_code=201)
async def place_order(
    body: schemas.NewOrder, session: SessionDep, queue: QueueDep
) -> schemas.CreatedOrder:
    """The order, its confirmation email, one webhook delivery per active endpoint and the
    audit row: all committed together, or none of them."""
    order = Order(email=body.email, total_cents=body.total_cents)
    session.add(order)
    await session.flush()  # assigns order.id
    confirmation = await queue.enqueue(
        jobs.send_order_confirmation,
        jobs.SendOrderConfirmation(order_id=order.id),
        job_id=f"order-confirmation:{order.id}",
        connection=session,
    )
    job_ids = [confirmation.id]
    endpoints = await session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.active).order_by(WebhookEndpoint.id)
    )
    deliveries = [
        WebhookDelivery(
            id=uuid.uuid4(),
            endpoint_id=endpoint.id,
            event="order.placed",
            body={"order_id": order.id, "total_cents": order.total_cents},
        )
        for endpoint in endpoints
    ]
    session.add_all(deliveries)
    if deliveries:
        handles = await queue.enqueue_many(
            [
                jobs.deliver_webhook.request(
                    jobs.DeliverWebhook(delivery_id=delivery.id),
                    job_id=f"webhook:{delivery.id}",
                )
                for delivery in deliveries
            ],
            connection=session,
        )
        job_ids += [handle.id for handle in handles]
    job_ids.append(await audit(queue, session, body.email, "order.placed", str(order.id)))
    await session.commit()
    return schemas.CreatedOrder(id=order.id, job_ids=job_ids)


@router.post("/webhook-endpoints", status_code=201)
async def register_webhook_endpoint(
    body: schemas.NewWebhookEndpoint, session: SessionDep, queue: QueueDep
) -> schemas.CreatedWebhookEndpoint:
    endpoint = WebhookEndpoint(url=body.url, secret=secrets.token_hex(32))
    session.add(endpoint)
    await audit(queue, session, "api", "webhook_endpoint.registered", body.url)
    try:
        await session.commit()
    except IntegrityError:
        raise HTTPException(409, f"{body.url} is already registered") from None
    return schemas.CreatedWebhookEndpoint(id=endpoint.id, secret=endpoint.secret)


@router.get("/audit-log")
async def audit_log(session: SessionDep) -> list[schemas.AuditRow]:
    rows = await session.scalars(select(AuditEntry).order_by(AuditEntry.at))
    return [schemas.AuditRow(actor=r.actor, action=r.action, subject=r.subject) for r in rows]
