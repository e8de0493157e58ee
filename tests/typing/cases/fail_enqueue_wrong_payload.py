"""A payload of another model is rejected by ``Queue.enqueue`` and ``SyncQueue.enqueue``."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import Queue, SyncQueue, job


class SendEmail(BaseModel):
    to: str


class SendSms(BaseModel):
    to: str


send_email = job("email.send", SendEmail, result=str)


# P is fixed by the definition (JobDef is invariant in P) and contradicted by the payload:
# mypy says 'Cannot infer value of type parameter "P"' [misc], pyright flags the argument.
async def produce(queue: Queue) -> None:
    # expect: mypy=misc pyright=reportArgumentType
    await queue.enqueue(send_email, SendSms(to="+100"))


def produce_sync(portal: SyncQueue) -> None:
    # expect: mypy=misc pyright=reportArgumentType
    portal.enqueue(send_email, SendSms(to="+100"))


def request() -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    send_email.request(SendSms(to="+100"))
