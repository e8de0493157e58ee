"""Enqueue throughput of the three call shapes a web app makes, on a private redis-server and a
temporary SQLite file: one awaited call at a time, 100 awaited calls in flight, and
``SyncQueue.enqueue`` from one plain thread. ``python bench/enqueue_paths.py [runs]``; prints
jobs/s per run and the median (the reference machine is shared and noisy)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conveyor import Queue, SyncQueue, job  # noqa: E402
from tests.servers.redis_server import RedisServer  # noqa: E402


class Ping(BaseModel):
    n: int


ping = job("bench.ping", Ping)
SECONDS = 2.0


async def single(url: str) -> float:
    async with Queue.from_url(url) as queue:
        await queue.enqueue(ping, Ping(n=0))
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            for n in range(100):
                await queue.enqueue(ping, Ping(n=n))
            count += 100
        return count / (time.perf_counter() - start)


async def concurrent(url: str, in_flight: int = 100) -> float:
    async with Queue.from_url(url) as queue:
        await queue.enqueue(ping, Ping(n=0))
        count, start = 0, time.perf_counter()
        deadline = start + SECONDS

        async def caller() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await queue.enqueue(ping, Ping(n=count))
                count += 1

        await asyncio.gather(*(caller() for _ in range(in_flight)))
        return count / (time.perf_counter() - start)


def sync_single(url: str) -> float:
    with SyncQueue.from_url(url) as queue:
        queue.enqueue(ping, Ping(n=0))
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            for n in range(100):
                queue.enqueue(ping, Ping(n=n))
            count += 100
        return count / (time.perf_counter() - start)


def report(label: str, runs: int, measure: Callable[[], float]) -> None:
    rates = [measure() for _ in range(runs)]
    shown = " ".join(f"{r:8.0f}" for r in rates)
    print(f"{label:<34} {shown}   median {statistics.median(rates):8.0f}/s", flush=True)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:

        def redis_url() -> str:
            return f"{server.url}?prefix=bench-{uuid.uuid4().hex[:8]}"

        def sqlite_url() -> str:
            return f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.db"

        for name, url in (("redis", redis_url), ("sqlite", sqlite_url)):
            report(f"{name} single awaited", runs, lambda: asyncio.run(single(url())))
            report(f"{name} 100 in flight", runs, lambda: asyncio.run(concurrent(url())))
            report(f"{name} SyncQueue one thread", runs, lambda: sync_single(url()))


if __name__ == "__main__":
    main()
