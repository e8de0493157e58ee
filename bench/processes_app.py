"""The worker of bench/processes.py: the shared benchmark's accounting call, after a fixed
amount of CPU work per job (``Work.rounds`` SHA-256 rounds over 1 KiB; 0 = the shared no-op).
With ``BENCH_VARIANT=noop`` the handler makes no accounting call either: it counts the job in
memory (bench/noop_record.py), so the drain shows the queue machinery alone.

Run as ``conveyor --url redis://... worker processes_app:worker`` with this folder and the
shared peers folder (for ``benchlib``) on ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import os

import benchlib as B
import noop_record
from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job

CONCURRENCY = B.ASYNC_CONCURRENCY  # 100, like every async peer
BLOCK = bytes(1024)


class Work(BaseModel):
    rounds: int = 0


work = job("bench.work", Work, result=None, queue="bench")
queue = Queue.from_url()
worker = Worker(queue, concurrency=CONCURRENCY, jobs=[work])


def burn(rounds: int) -> None:
    """CPU work that holds the GIL, as most pure-Python handler code does."""
    digest = BLOCK
    for _ in range(rounds):
        digest = hashlib.sha256(digest + BLOCK).digest()


if os.environ.get("BENCH_VARIANT") == "noop":

    @worker.handles(work)
    async def handle_work(payload: Work, ctx: JobContext) -> None:
        burn(payload.rounds)
        noop_record.record()

    worker.run_beside("bench-noop-flush", noop_record.flush_at_exit)
else:

    @worker.handles(work)
    async def handle_work(payload: Work, ctx: JobContext) -> None:
        burn(payload.rounds)  # on the event loop: the process does nothing else meanwhile
        await B.record_async()
