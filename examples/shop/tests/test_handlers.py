"""The shop's handlers, one at a time: called directly with ``make_context``, or run by the
worker's own wiring over the in-memory queue with ``run_until_idle``. The database, the SMTP
server and the webhook receiver are real."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from conveyor import FakeClock, JobState, Permanent, Queue, Worker
from conveyor.testing import assert_enqueued, make_context, run_until_idle
from examples.shop import jobs
from examples.shop.local.smtp_sink import SmtpSink
from examples.shop.local.webhook_receiver import WebhookReceiver
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
from examples.shop.worker.handlers import Handlers, WebhookUnavailable


async def an_invitation(database: Database, email: str = "ada@example.com") -> uuid.UUID:
    invitation_id = uuid.uuid4()
    async with database.sessions() as session, session.begin():
        session.add(Invitation(id=invitation_id, email=email, inviter="grace"))
    return invitation_id


async def a_delivery(database: Database, receiver: WebhookReceiver, endpoint: str) -> uuid.UUID:
    """A delivery of order.placed to the receiver's ``endpoint``, which knows its secret."""
    delivery_id = uuid.uuid4()
    async with database.sessions() as session, session.begin():
        hook = WebhookEndpoint(url=receiver.url(endpoint), secret=uuid.uuid4().hex)
        session.add(hook)
        await session.flush()
        session.add(
            WebhookDelivery(id=delivery_id, endpoint_id=hook.id, event="order.placed", body={})
        )
        with receiver.lock:
            receiver.secrets[endpoint] = hook.secret
    return delivery_id


async def test_an_invitation_email_is_sent_once_however_often_the_job_runs(
    handlers: Handlers, database: Database, smtp_sink: SmtpSink
) -> None:
    payload = jobs.SendInvite(invitation_id=await an_invitation(database))
    assert await handlers.send_invite(payload, make_context(jobs.send_invite)) == (
        "sent to ada@example.com"
    )
    # The same job again (a worker that died after sending, say): the row says it is done.
    again = make_context(jobs.send_invite, attempt=2)
    assert await handlers.send_invite(payload, again) == "already sent"
    assert [(e.to, e.subject) for e in smtp_sink.emails] == [
        ("ada@example.com", "grace invited you to the shop")
    ]
    async with database.sessions() as session:
        invitation = await session.get_one(Invitation, payload.invitation_id)
        assert invitation.email_sent_at is not None


async def test_an_invitation_that_does_not_exist_fails_without_retrying(
    handlers: Handlers, smtp_sink: SmtpSink
) -> None:
    payload = jobs.SendInvite(invitation_id=uuid.uuid4())
    with pytest.raises(Permanent, match="does not exist"):
        await handlers.send_invite(payload, make_context(jobs.send_invite))
    assert smtp_sink.emails == []


async def test_each_password_reset_sends_its_own_email(
    handlers: Handlers, database: Database, smtp_sink: SmtpSink
) -> None:
    async with database.sessions() as session, session.begin():
        user = User(email="ada@example.com")
        session.add(user)
        await session.flush()
        resets = [PasswordReset(id=uuid.uuid4(), user_id=user.id, token=t) for t in ("a1", "b2")]
        session.add_all(resets)
    for reset in resets:
        payload = jobs.SendPasswordReset(reset_id=reset.id)
        await handlers.send_password_reset(payload, make_context(jobs.send_password_reset))
    assert [e.subject for e in smtp_sink.emails] == ["Reset your password"] * 2
    assert len({e.message_id for e in smtp_sink.emails}) == 2


async def test_the_worker_runs_an_order_confirmation(
    conveyor_queue: Queue, worker: Worker, database: Database, smtp_sink: SmtpSink
) -> None:
    async with database.sessions() as session, session.begin():
        order = Order(email="bob@example.com", total_cents=1999)
        session.add(order)
    payload = jobs.SendOrderConfirmation(order_id=order.id)
    handle = await conveyor_queue.enqueue(jobs.send_order_confirmation, payload)
    await run_until_idle(conveyor_queue, worker)
    (info,) = assert_enqueued(conveyor_queue, jobs.send_order_confirmation, payload, count=1)
    assert info.state is JobState.COMPLETED and info.id == handle.id
    assert info.result == "sent to bob@example.com"
    assert [(e.to, e.subject) for e in smtp_sink.emails] == [
        ("bob@example.com", f"Order #{order.id} confirmed")
    ]


async def test_a_503_raises_the_transient_error(
    handlers: Handlers, database: Database, receiver: WebhookReceiver
) -> None:
    payload = jobs.DeliverWebhook(delivery_id=await a_delivery(database, receiver, "flaky"))
    with pytest.raises(WebhookUnavailable, match="answered 503"):
        await handlers.deliver_webhook(payload, make_context(jobs.deliver_webhook))
    assert await handlers.deliver_webhook(payload, make_context(jobs.deliver_webhook)) == 200


async def test_a_webhook_is_signed_and_delivered(
    handlers: Handlers, database: Database, receiver: WebhookReceiver
) -> None:
    delivery_id = await a_delivery(database, receiver, "ok")
    payload = jobs.DeliverWebhook(delivery_id=delivery_id)
    assert await handlers.deliver_webhook(payload, make_context(jobs.deliver_webhook)) == 200
    assert [(r.endpoint, r.verified, r.status) for r in receiver.requests] == [("ok", True, 200)]
    # Delivered: running the job again sends nothing.
    assert await handlers.deliver_webhook(payload, make_context(jobs.deliver_webhook)) == 200
    assert len(receiver.requests) == 1
    async with database.sessions() as session:
        delivery = await session.get_one(WebhookDelivery, delivery_id)
        assert delivery.status == "delivered" and delivery.delivered_at is not None


async def test_a_503_is_retried_after_the_backoff(
    conveyor_queue: Queue,
    conveyor_clock: FakeClock,
    worker: Worker,
    database: Database,
    receiver: WebhookReceiver,
) -> None:
    payload = jobs.DeliverWebhook(delivery_id=await a_delivery(database, receiver, "flaky"))
    await conveyor_queue.enqueue(jobs.deliver_webhook, payload)
    await run_until_idle(conveyor_queue, worker)
    # The first attempt met the 503: the job waits for its backoff, on the fake clock.
    (info,) = assert_enqueued(conveyor_queue, jobs.deliver_webhook, payload, count=1)
    assert info.state is JobState.RETRYING and info.attempt == 1
    assert info.error is not None and "WebhookUnavailable" in info.error
    conveyor_clock.advance(timedelta(hours=2).total_seconds())
    await run_until_idle(conveyor_queue, worker)
    (info,) = assert_enqueued(conveyor_queue, jobs.deliver_webhook, payload, count=1)
    assert info.state is JobState.COMPLETED and info.result == 200
    assert [r.status for r in receiver.requests] == [503, 200]
    assert all(r.verified for r in receiver.requests)


async def test_a_410_fails_the_job_at_once_and_disables_the_endpoint(
    conveyor_queue: Queue, worker: Worker, database: Database, receiver: WebhookReceiver
) -> None:
    delivery_id = await a_delivery(database, receiver, "gone")
    payload = jobs.DeliverWebhook(delivery_id=delivery_id)
    await conveyor_queue.enqueue(jobs.deliver_webhook, payload)
    await run_until_idle(conveyor_queue, worker)
    (info,) = assert_enqueued(conveyor_queue, jobs.deliver_webhook, payload, count=1)
    assert info.state is JobState.FAILED and info.attempt == 1  # permanent=(EndpointGone,)
    assert info.error is not None and "410" in info.error
    assert [r.status for r in receiver.requests] == [410]
    async with database.sessions() as session:
        delivery = await session.get_one(WebhookDelivery, delivery_id)
        endpoint = await session.get_one(WebhookEndpoint, delivery.endpoint_id)
        assert delivery.status == "gone" and not endpoint.active


async def test_an_audit_row_is_written_once(handlers: Handlers, database: Database) -> None:
    payload = jobs.WriteAudit(event_id=uuid.uuid4(), actor="ada", action="x.done", subject="1")
    for attempt in (1, 2):
        await handlers.write_audit(payload, make_context(jobs.write_audit, attempt=attempt))
    async with database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 1


async def test_the_clean_up_deletes_expired_sessions_and_audits_it(
    handlers: Handlers, database: Database
) -> None:
    now = utcnow()
    async with database.sessions() as session, session.begin():
        user = User(email="ada@example.com")
        session.add(user)
        await session.flush()
        session.add_all(
            [
                LoginSession(token="old1", user_id=user.id, expires_at=now - timedelta(days=1)),
                LoginSession(token="old2", user_id=user.id, expires_at=now - timedelta(hours=1)),
                LoginSession(token="live", user_id=user.id, expires_at=now + timedelta(hours=1)),
            ]
        )
    ctx = make_context(jobs.clean_expired_sessions, job_id="cron:clean:1")
    assert await handlers.clean_expired_sessions(jobs.CleanExpiredSessions(), ctx) == 2
    again = make_context(jobs.clean_expired_sessions, job_id="cron:clean:2")
    assert await handlers.clean_expired_sessions(jobs.CleanExpiredSessions(), again) == 0
    async with database.sessions() as session:
        tokens = (await session.scalars(select(LoginSession.token))).all()
        assert tokens == ["live"]
        audit = (await session.scalars(select(AuditEntry))).all()
        assert [(a.action, a.subject) for a in audit] == [("sessions.cleaned", "2 expired")]


def test_the_worker_serves_every_definition_and_schedules_the_clean_up(worker: Worker) -> None:
    worker.check()  # refuses a definition of jobs without a handler
    assert sorted(worker.queues) == ["audit", "emails", "maintenance", "webhooks"]
