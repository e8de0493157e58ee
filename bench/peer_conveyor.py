"""Conveyor as an extra peer of the shared benchmark (see its README, "Adding a peer...").

Run by the shared runner with Conveyor's own interpreter (/work/main/.venv), cwd = the peers
copy and PYTHONPATH = this folder + the peers folder, so `benchlib` and `peer_conveyor` import.

URL: $BENCH_CONVEYOR_URL if set, else $BENCH_REDIS_URL (the runner's private Redis, db 0).
A sqlite:// URL is accepted for smoke tests of the pipeline: the runner flushes Redis db 0
before each enqueue mode, so for SQLite each `enqueue` starts from a fresh file instead.

Variants ($BENCH_VARIANT, set by the runner from the peer spec's third field; words joined by
"-", e.g. `noop-p2`):

* `noop`: the handler only counts the job in memory (bench/noop_record.py, the twin of the Node
  peer's `BENCH_VARIANT=noop`), so the drain shows the queue machinery alone;
* `p<N>`: the worker command is `conveyor worker ... --processes N`;
* `sync`: the producer is a `SyncQueue` used from plain threads: single = one blocking
  `enqueue` at a time from the main thread, concurrent = 100 threads each making one call
  (windows of 100, as the async peers' gather), bulk = `enqueue_many` per 1,000; the latency
  producer also enqueues through it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import benchlib as B
import noop_record
from pydantic import BaseModel

import conveyor
from conveyor import JobContext, Queue, SyncQueue, Worker, job

URL = os.environ.get("BENCH_CONVEYOR_URL") or B.REDIS_URL
CONCURRENCY = B.ASYNC_CONCURRENCY  # 100, like every async peer
VARIANT = frozenset(w for w in B.VARIANT.split("-") if w)
NOOP = "noop" in VARIANT
SYNC = "sync" in VARIANT
PROCESSES = next((int(w[1:]) for w in VARIANT if w[:1] == "p" and w[1:].isdigit()), 1)
# "2w" and "full" belong to the shared peer_conveyor_sqlite.py, which wraps this module (two
# worker processes; ?synchronous=full) and reads them itself.
UNKNOWN = VARIANT - {"noop", "sync", f"p{PROCESSES}", "2w", "full"}
if UNKNOWN:
    raise SystemExit(f"BENCH_VARIANT={B.VARIANT!r}: unknown {sorted(UNKNOWN)}")


class Noop(BaseModel):
    ts: float = 0.0


noop = job("bench.noop", Noop, result=None, queue="bench")
queue = Queue.from_url(URL)
worker = Worker(queue, concurrency=CONCURRENCY)


if NOOP:

    @worker.handles(noop)
    async def handle_noop(payload: Noop, ctx: JobContext) -> None:
        # an in-memory counter, flushed to the accounting keys every 5 ms
        noop_record.record(payload.ts)

    worker.run_beside("bench-noop-flush", noop_record.flush_at_exit)
else:

    @worker.handles(noop)
    async def handle_noop(payload: Noop, ctx: JobContext) -> None:
        # the shared accounting call and nothing else, as for every peer
        await B.record_async(payload.ts)


def info() -> dict[str, object]:
    argv = [B.bin_of("conveyor"), "--url", URL, "worker", "peer_conveyor:worker",
            "--concurrency", str(CONCURRENCY), "--log-level", "WARNING"]  # fmt: skip
    if PROCESSES > 1:
        argv += ["--processes", str(PROCESSES)]
    layout = "one process" if PROCESSES == 1 else f"--processes {PROCESSES}"
    return {
        "peer": "conveyor" + (f" ({B.VARIANT})" if B.VARIANT else ""),
        "package": "conveyor",
        "version": conveyor.__version__,
        "redis_py": B.dist_version("redis"),
        "url_scheme": urlparse(URL).scheme,
        "variant": B.VARIANT,
        "processes": PROCESSES,
        "concurrency": f"concurrency={CONCURRENCY}, {layout}",
        "worker_argv": argv,
        "bulk_api": f"{'sync_queue' if SYNC else 'queue'}.enqueue_many([noop.request(...)]) "
        "per 1000",
        "concurrent_api": "SyncQueue.enqueue from 100 threads, 100 calls in flight"
        if SYNC
        else "asyncio.gather of queue.enqueue, 100 in flight",
        "producer": "SyncQueue from plain threads" if SYNC else "Queue (asyncio)",
        "handler": "no-op: in-process counter, totals flushed to db 15 every 5 ms"
        if NOOP
        else "shared accounting: one redis.asyncio pipeline to db 15",
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


def sync_enqueue(mode: str, n: int) -> float | None:
    """The `sync` variant's producer: blocking calls from plain threads, no event loop here."""
    with SyncQueue(Queue.from_url(URL)) as sq:
        sq.counts()  # connect before timing (a read: nothing is enqueued)

        def one(_: object = None) -> None:
            sq.enqueue(noop, Noop(ts=0.0))

        t = time.perf_counter()
        if mode == "single":
            for _ in range(n):
                one()
        elif mode == "concurrent":
            with ThreadPoolExecutor(B.CONCURRENT_WINDOW) as pool:
                t = time.perf_counter()  # threads are started lazily: not by the pool's creation
                for chunk in B.chunks(range(n), B.CONCURRENT_WINDOW):
                    list(pool.map(one, chunk))
        elif mode == "bulk":
            for chunk in B.chunks(range(n), B.BULK_CHUNK):
                sq.enqueue_many([noop.request(Noop(ts=0.0)) for _ in chunk])
        else:
            return None
        return time.perf_counter() - t


def sync_latency(n: int, interval: float) -> float:
    with SyncQueue(Queue.from_url(URL)) as sq:
        sq.counts()
        return float(B.paced_sync(n, interval, lambda ts: sq.enqueue(noop, Noop(ts=ts))))


def enqueue(mode: str, n: int) -> float | None:
    fresh_sqlite_file()
    if SYNC:
        return sync_enqueue(mode, n)
    return asyncio.run(_timed(lambda: B.async_enqueue(mode, n, _one, _many)))


def latency(n: int, interval: float) -> float | None:
    # no fresh_sqlite_file() here: the worker is running on that file
    if SYNC:
        return sync_latency(n, interval)
    return asyncio.run(_timed(lambda: B.paced_async(n, interval, _one)))


if __name__ == "__main__":
    B.cli(info, enqueue, latency)
