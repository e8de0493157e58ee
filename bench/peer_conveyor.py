"""Conveyor as an extra peer of the shared benchmark (see its README, "Adding a peer...").

Run by the shared runner with Conveyor's own interpreter (/work/main/.venv), cwd = the peers
copy and PYTHONPATH = this folder + the peers folder, so `benchlib` and `peer_conveyor` import.

URL: $BENCH_CONVEYOR_URL if set, else $BENCH_REDIS_URL (the runner's private Redis, db 0).
A sqlite:// URL is accepted for smoke tests of the pipeline: the runner flushes Redis db 0
before each enqueue mode, so for SQLite each `enqueue` starts from a fresh file instead.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlparse

import benchlib as B
from pydantic import BaseModel

import conveyor
from conveyor import JobContext, Queue, Worker, job

URL = os.environ.get("BENCH_CONVEYOR_URL") or B.REDIS_URL
CONCURRENCY = B.ASYNC_CONCURRENCY  # 100, like every async peer


class Noop(BaseModel):
    ts: float = 0.0


noop = job("bench.noop", Noop, result=None, queue="bench")
queue = Queue.from_url(URL)
worker = Worker(queue, concurrency=CONCURRENCY)


@worker.handles(noop)
async def handle_noop(payload: Noop, ctx: JobContext) -> None:
    # the shared accounting call and nothing else, as for every peer
    await B.record_async(payload.ts)


def info() -> dict[str, object]:
    return {
        "peer": "conveyor",
        "package": "conveyor",
        "version": conveyor.__version__,
        "redis_py": B.dist_version("redis"),
        "url_scheme": urlparse(URL).scheme,
        "concurrency": f"concurrency={CONCURRENCY}, one process",
        "worker_argv": [
            B.bin_of("conveyor"),
            "--url",
            URL,
            "worker",
            "peer_conveyor:worker",
            "--concurrency",
            str(CONCURRENCY),
            "--log-level",
            "WARNING",
        ],
        "bulk_api": "queue.enqueue_many([noop.request(...)]) per 1000",
        "concurrent_api": "asyncio.gather of queue.enqueue, 100 in flight",
        "notes": "Worker started with the conveyor CLI at --log-level WARNING; defaults "
        "otherwise (lease 30 s, keeps the last 1,000 completed jobs per queue)",
    }


def fresh_sqlite_file() -> None:
    """For sqlite:// URLs only: start from an empty database, as the runner's FLUSHDB does."""
    parsed = urlparse(URL)
    if parsed.scheme != "sqlite" or not parsed.path:
        return
    # sqlite:///rel.db -> "/rel.db" (relative), sqlite:////abs.db -> "//abs.db" (absolute)
    path = Path(parsed.path[1:])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _one(ts: float) -> None:
    await queue.enqueue(noop, Noop(ts=ts))


async def _many(k: int) -> None:
    await queue.enqueue_many([noop.request(Noop(ts=0.0)) for _ in range(k)])


async def _timed(body: Callable[[], Awaitable[float | None]]) -> float | None:
    # connect before timing: the runner times enqueue calls with the client already made
    await queue.connect()
    try:
        return await body()
    finally:
        await queue.close()


def enqueue(mode: str, n: int) -> float | None:
    fresh_sqlite_file()
    return asyncio.run(_timed(lambda: B.async_enqueue(mode, n, _one, _many)))


def latency(n: int, interval: float) -> float | None:
    # no fresh_sqlite_file() here: the worker is running on that file
    return asyncio.run(_timed(lambda: B.paced_async(n, interval, _one)))


if __name__ == "__main__":
    B.cli(info, enqueue, latency)
