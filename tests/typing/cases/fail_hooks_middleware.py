"""Misused hooks and middleware: a hook for another payload, middleware of the wrong shape."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import JobCall, JobEvent, Queue, Worker, job


class Email(BaseModel):
    to: str


class Invoice(BaseModel):
    customer: str


send_email = job("email.send", Email)
worker = Worker(Queue.from_url("memory://"))


async def wrong_payload(event: JobEvent[Invoice]) -> None: ...


# expect: mypy=arg-type pyright=reportArgumentType
worker.on_dead(send_email)(wrong_payload)


async def one_argument(call: JobCall) -> object: ...


# expect: mypy=arg-type pyright=reportArgumentType
worker.use(one_argument)


def not_an_event(n: int) -> None: ...


# expect: mypy=arg-type pyright=reportCallIssue,reportArgumentType
worker.on_retry(not_an_event)
