"""Handlers of the demo shop; ``conveyor worker examples.demo.worker:worker`` runs them.

Side effects are fake but recorded: every email "sent", webhook "delivered" and audit row
"written" is appended to a side-effects table, so the demo can prove each job ran once.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading

from conveyor import JobContext, Permanent, Queue, Retention, Worker, WorkerConfig
from examples.demo import jobs
from examples.demo.jobs import (
    AuditLogWrite,
    OrderConfirmation,
    PasswordReset,
    SendInvite,
    WebhookDelivery,
)

queue = Queue.from_url()
worker = Worker(
    queue,
    jobs=jobs,  # every definition in jobs.py must have a handler, or the worker will not start
    config=WorkerConfig(
        concurrency=20,
        maintenance_interval=0.5,
        poll_interval=0.2,
        # Keep every completed job so the summary can count them (the default keeps 1000).
        retention=Retention(completed_max_count=None),
    ),
)

KNOWN_USERS = range(1, 1000)  # the fake user table: ids outside it do not exist

_local = threading.local()


def record_effect(kind: str, key: str, ctx: JobContext) -> None:
    """Append one side effect to the demo's effects database (one connection per thread)."""
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["DEMO_EFFECTS_DB"], timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        _local.conn = conn
    conn.execute(
        "INSERT INTO effect (kind, key, job_id, attempt, pid) VALUES (?, ?, ?, ?, ?)",
        (kind, key, ctx.job_id, ctx.attempt, os.getpid()),
    )


@worker.handles(jobs.send_invite)
async def send_invite(payload: SendInvite, ctx: JobContext) -> str:
    await asyncio.sleep(0.002)  # the SMTP round trip
    record_effect("email", f"invite:{payload.invitation_id}", ctx)
    return f"invited {payload.to_email}"


@worker.handles(jobs.password_reset)
async def password_reset(payload: PasswordReset, ctx: JobContext) -> str:
    if payload.user_id not in KNOWN_USERS:
        raise Permanent(f"user {payload.user_id} does not exist")  # retrying cannot help
    await asyncio.sleep(0.002)
    record_effect("email", f"reset:{payload.user_id}", ctx)
    return f"reset link sent to {payload.to_email}"


@worker.handles(jobs.order_confirmation)
def order_confirmation(payload: OrderConfirmation, ctx: JobContext) -> str:
    # A sync handler: runs in a thread, like a blocking SMTP client would.
    record_effect("email", f"order:{payload.order_id}", ctx)
    return f"order {payload.order_id} confirmed"


@worker.handles(jobs.deliver_webhook)
async def deliver_webhook(payload: WebhookDelivery, ctx: JobContext) -> int:
    await asyncio.sleep(0.003)
    if ctx.attempt <= payload.flaky_times:
        raise ConnectionError(f"{payload.endpoint} answered 503")  # transient: retried
    record_effect("webhook", f"{payload.event}:{payload.endpoint}", ctx)
    return 200


@worker.handles(jobs.write_audit_log)
def write_audit_log(payload: AuditLogWrite, ctx: JobContext) -> None:
    record_effect("audit", f"{payload.actor}:{payload.action}:{payload.subject}", ctx)
