"""Rate-limited definitions and a handler that meets an upstream limit."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from conveyor import JobContext, JobDef, Queue, Rate, RateLimited, Worker, job


class Call(BaseModel):
    url: str


per_second = job("api.call", Call, result=int, queue="api", rate_limit=Rate(50, per=1))
per_minute: JobDef[Call, None] = job(
    "api.slow_call", Call, queue="api-slow", rate_limit=Rate(10, per=timedelta(minutes=1))
)
unlimited = job("api.free", Call, rate_limit=None)

limit: Rate = per_second.rate_limit or Rate(1, per=0.5)
count: int = limit.count
window: float = limit.per


def serve(queue: Queue) -> Worker:
    worker = Worker(queue)

    @worker.handles(per_second)
    async def call(payload: Call, ctx: JobContext) -> int:
        if payload.url.endswith("/busy"):
            raise RateLimited(retry_after=timedelta(seconds=30), reason="HTTP 429")
        raise RateLimited(2.5)

    return worker
