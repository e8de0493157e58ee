"""Constructing the payload model without a required field."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Queue, job


class SendEmail(BaseModel):
    to: str
    subject: str


send_email = job("email.send", SendEmail, result=str)


async def produce(queue: Queue) -> None:
    # expect: mypy=call-arg pyright=reportCallIssue
    await queue.enqueue(send_email, SendEmail(to="a@example.com"))
