"""Enqueue inside the caller's transaction: ``connection=`` takes the app's own connection
(sqlite3, psycopg, SQLAlchemy) and the handles stay typed by the definition.

Locals prefixed with ``_`` exist only to pin a type (pyright does not report them as unused).
"""

from __future__ import annotations

import sqlite3

import psycopg
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from conveyor import JobHandle, Queue, SyncJobHandle, SyncQueue, job


class SendInvite(BaseModel):
    to_email: str


send_invite = job("email.send_invite", SendInvite, result=str)


async def produce(
    queue: Queue, lite: sqlite3.Connection, pg: psycopg.AsyncConnection, session: AsyncSession
) -> None:
    handle = await queue.enqueue(send_invite, SendInvite(to_email="a"), connection=lite)
    _typed: JobHandle[str] = handle
    _dup: bool = handle.duplicate
    await queue.enqueue(send_invite, SendInvite(to_email="b"), job_id="b", connection=pg)
    await queue.enqueue_many([send_invite.request(SendInvite(to_email="c"))], connection=session)
    await queue.enqueue_by_name("email.send_invite", {"to_email": "d"}, connection=lite)


def view(portal: SyncQueue, lite: sqlite3.Connection, session: Session) -> str:
    handle = portal.enqueue(send_invite, SendInvite(to_email="a"), connection=session)
    _typed: SyncJobHandle[str] = handle
    portal.enqueue_many([send_invite.request(SendInvite(to_email="b"))], connection=lite)
    portal.enqueue_by_name("email.send_invite", {"to_email": "c"}, connection=lite)
    lite.commit()
    return handle.id


def outbox_queue() -> Queue:
    return Queue.from_url("redis://localhost:6379/0", outbox="postgresql://localhost/app")
