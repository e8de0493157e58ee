"""Enqueue from async code, in one call and in a batch; results are typed by the definition.

Locals prefixed with ``_`` exist only to pin a type (pyright does not report them as unused).
"""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import JobDef, JobHandle, JobRequest, Queue, job


class SendEmail(BaseModel):
    to: str
    subject: str
    retries: int = 0


send_email = job("email.send", SendEmail, result=str)
ping = job("ping", SendEmail)

_typed_def: JobDef[SendEmail, str] = send_email
_no_result_def: JobDef[SendEmail, None] = ping


async def produce(queue: Queue) -> str:
    handle = await queue.enqueue(send_email, SendEmail(to="a@example.com", subject="hi"))
    _typed_handle: JobHandle[str] = handle
    result: str = await handle.result()
    _upper: str = (await handle.result(timeout=5.0)).upper()

    delayed = await queue.enqueue(
        send_email,
        SendEmail(to="b@example.com", subject="later", retries=2),
        job_id="welcome-b",
        delay=30,
        priority=5,
        queue="mail",
        attempts=7,
    )
    _later: str = await delayed.result()

    request: JobRequest[SendEmail, str] = send_email.request(
        SendEmail(to="c@example.com", subject="batch"), job_id="c"
    )
    handles = await queue.enqueue_many(
        [request, send_email.request(SendEmail(to="d@example.com", subject="batch"))]
    )
    _ids: list[str] = [h.id for h in handles]

    again: JobHandle[str] = queue.handle(send_email, handle.id)
    _same: str = await again.result()
    return result


async def produce_without_result(queue: Queue) -> bool:
    handle = await queue.enqueue(ping, SendEmail(to="a@example.com", subject="ping"))
    _typed_handle: JobHandle[None] = handle
    await handle.result()
    return handle.duplicate
