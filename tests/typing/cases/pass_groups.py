"""Grouped definitions: a key from the payload, a concurrency and a rate per key."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pydantic import BaseModel

from conveyor import JobContext, JobDef, Queue, Rate, Worker, job


class Delivery(BaseModel):
    account_id: str
    endpoint_host: str


def by_host(p: Delivery) -> str:
    return p.endpoint_host


deliver = job(
    "webhook.deliver",
    Delivery,
    result=int,
    queue="webhooks",
    group_key=lambda p: p.account_id,
    group_concurrency=1,
    group_rate=Rate(5, per=timedelta(seconds=1)),
)
by_endpoint: JobDef[Delivery, None] = job("webhook.ping", Delivery, group_key=by_host)

key: Callable[[Delivery], str] | None = deliver.group_key
most: int | None = deliver.group_concurrency


async def send(queue: Queue) -> None:
    await queue.enqueue(deliver, Delivery(account_id="a-1", endpoint_host="example.com"))


def serve(queue: Queue) -> Worker:
    worker = Worker(queue)

    @worker.handles(deliver)
    async def run(payload: Delivery, ctx: JobContext) -> int:
        return len(payload.endpoint_host)

    return worker
