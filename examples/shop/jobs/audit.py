"""The audit log: written by a job, so that a request never waits on it."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

from conveyor import Fixed, job


class WriteAudit(BaseModel):
    event_id: UUID  # chosen by the enqueuer: the row's key, so a retry writes nothing twice
    actor: str
    action: str
    subject: str


write_audit = job("shop.audit.write", WriteAudit, queue="audit", attempts=10, backoff=Fixed(1.0))
