"""Middleware, hooks and observers as a user writes them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from conveyor import CallNext, JobCall, JobEvent, Observer, Queue, Worker, job
from conveyor.drivers.records import JobRecord


class Email(BaseModel):
    to: str


send_email = job("email.send", Email)
worker = Worker(Queue.from_url("memory://"))


@worker.use
async def timing(call: JobCall, call_next: CallNext) -> object:
    return await call_next()


@worker.on_dead
async def page(event: JobEvent[Any]) -> None:
    print(event.job_id, event.error, event.redacted_payload)


@worker.on_retry
def note(event: JobEvent[Any]) -> None:
    print(event.retry_in)


@worker.on_failed(send_email)
async def bounced(event: JobEvent[Email]) -> None:
    if event.payload is not None:
        print(event.payload.to.upper())


class Starts(Observer):
    def job_started(self, record: JobRecord, now: float) -> None:
        print(now - record.run_at)


worker.observe(Starts())
