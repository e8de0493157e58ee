"""The app of the contention test: a worker whose handler appends ``<number> <pid> <attempt>``
to a ledger file (``$CONTENTION_LEDGER``), and a producer that enqueues one job per call.

    conveyor --url sqlite:///... worker tests.backends.sqlite.contention_app:worker
    python -m tests.backends.sqlite.contention_app URL START COUNT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from pydantic import BaseModel

from conveyor import JobContext, Queue, Retention, Worker, WorkerConfig, job

LEDGER = "CONTENTION_LEDGER"


class Mark(BaseModel):
    number: int


mark = job("contention.mark", Mark, result=None, queue="contention")
queue = Queue.from_url()
worker = Worker(
    queue,
    config=WorkerConfig(
        concurrency=50,
        lease_seconds=2.0,  # a killed worker's jobs are rescued within seconds
        maintenance_interval=0.2,
        heartbeat_interval=0.5,
        poll_interval=0.05,
        retention=Retention(completed_max_count=None),  # every job's end stays readable
    ),
)
_fd: int | None = None


@worker.handles(mark)
async def handle_mark(payload: Mark, ctx: JobContext) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ[LEDGER], os.O_WRONLY | os.O_APPEND)
    # One write() of one short line with O_APPEND: lines of several processes never interleave.
    os.write(_fd, f"{payload.number} {os.getpid()} {ctx.attempt}\n".encode())


async def produce(url: str, start: int, count: int) -> dict[str, int]:
    """Enqueue ``count`` jobs one call at a time; count the errors any call raised."""
    producer = Queue.from_url(url)
    await producer.connect()
    errors: dict[str, int] = {}
    try:
        for number in range(start, start + count):
            try:
                await producer.enqueue(mark, Mark(number=number))
            except Exception as exc:  # reported: the test fails on any
                key = f"{type(exc).__name__}: {exc}"
                errors[key] = errors.get(key, 0) + 1
    finally:
        await producer.close()
    return errors


if __name__ == "__main__":
    url, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(produce(url, start, count))))
