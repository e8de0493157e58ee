"""The test helpers keep the definition's payload type, and the FastAPI lifespan wants an app's
lifespan."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Queue, job
from conveyor.fastapi import conveyor_lifespan
from conveyor.testing import assert_enqueued


class SendInvite(BaseModel):
    to_email: str


class SendSms(BaseModel):
    to: str


send_invite = job("email.send_invite", SendInvite, result=str)


def check(queue: Queue) -> None:
    # expect: mypy=misc pyright=reportArgumentType
    assert_enqueued(queue, send_invite, SendSms(to="+100"))


def not_a_lifespan(queue: Queue) -> None:
    # expect: mypy=call-overload pyright=reportCallIssue,reportArgumentType
    conveyor_lifespan(queue, "startup")
