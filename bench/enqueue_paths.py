"""Enqueue throughput of the three call shapes a web app makes, on a private redis-server and a
temporary SQLite file: one awaited call at a time, 100 awaited calls in flight, and
``SyncQueue.enqueue`` from one plain thread. ``python bench/enqueue_paths.py [runs]``; prints
jobs/s per run and the median, and the median CPU of this process per job (steadier than rates
on the shared reference machine).

Beside them, on Redis, the floors of a blocking single enqueue: the same insert script sent
by redis-py (with hiredis) from a plain thread, with the arguments of a job Conveyor built
(what is left once Conveyor's own Python is gone), and huey's enqueue (a pickled message and
one LPUSH), in a subprocess when ``--huey PYTHON`` names an interpreter with huey installed
(default: the peers' venv that ``make bench`` builds)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers.redis_server import RedisServer

from conveyor import Queue, SyncQueue, job
from conveyor.backends.redis._blocking import BlockingClient

ROOT = Path(__file__).resolve().parent.parent
HUEY_PRODUCER = """
import os, sys, time
from huey import RedisHuey
huey = RedisHuey("bench", url=sys.argv[1])
@huey.task(name="noop")
def noop(ts=0.0):
    pass
noop(0.0)
count, start, cpu = 0, time.perf_counter(), time.process_time()
while time.perf_counter() - start < float(sys.argv[2]):
    for _ in range(100):
        noop(0.0)
    count += 100
print(count / (time.perf_counter() - start), (time.process_time() - cpu) / count)
"""


class Ping(BaseModel):
    n: int


ping = job("bench.ping", Ping)
SECONDS = 2.0


Measured = tuple[float, float]  # jobs/s, CPU seconds of this process per job


def measured(count: int, start: float, cpu: float) -> Measured:
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count


async def single(url: str) -> Measured:
    async with Queue.from_url(url) as queue:
        await queue.enqueue(ping, Ping(n=0))
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < SECONDS:
            for n in range(100):
                await queue.enqueue(ping, Ping(n=n))
            count += 100
        return measured(count, start, cpu)


async def concurrent(url: str, in_flight: int = 100) -> Measured:
    async with Queue.from_url(url) as queue:
        await queue.enqueue(ping, Ping(n=0))
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        deadline = start + SECONDS

        async def caller() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await queue.enqueue(ping, Ping(n=count))
                count += 1

        await asyncio.gather(*(caller() for _ in range(in_flight)))
        return measured(count, start, cpu)


def sync_single(url: str) -> Measured:
    with SyncQueue.from_url(url) as queue:
        queue.enqueue(ping, Ping(n=0))
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < SECONDS:
            for n in range(100):
                queue.enqueue(ping, Ping(n=n))
            count += 100
        return measured(count, start, cpu)


def raw_floor(url: str) -> Measured:
    """The insert script of one job, sent by redis-py from this thread: Conveyor builds the
    command once (its arguments captured on the way out), then only the job id changes."""
    sent: list[tuple[Any, ...]] = []
    execute = BlockingClient.execute_command

    async def capture(client: BlockingClient, *args: Any) -> Any:
        sent.append(args)
        return await execute(client, *args)

    with SyncQueue.from_url(url) as queue:
        queue.enqueue(ping, Ping(n=0))  # connected, script loaded
        BlockingClient.execute_command = capture  # type: ignore[method-assign]
        try:
            queue.enqueue(ping, Ping(n=1))
        finally:
            BlockingClient.execute_command = execute  # type: ignore[method-assign]
    command = list(sent[-1])
    id_at = 3 + int(command[2]) + 2  # EVALSHA sha numkeys keys... now count id
    client = redis.Redis.from_url(url.split("?")[0])
    try:
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < SECONDS:
            for _ in range(100):
                command[id_at] = uuid.uuid4().hex[:16]
                client.execute_command(*command)
            count += 100
        return measured(count, start, cpu)
    finally:
        client.close()


def huey_single(python: str, url: str) -> Measured:
    out = subprocess.run(
        [python, "-c", HUEY_PRODUCER, url, str(SECONDS)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def report(label: str, runs: int, measure: Callable[[], Measured]) -> None:
    results = [measure() for _ in range(runs)]
    shown = " ".join(f"{rate:8.0f}" for rate, _ in results)
    rate = statistics.median(r for r, _ in results)
    cpu = statistics.median(c for _, c in results) * 1e6
    print(f"{label:<34} {shown}   median {rate:8.0f}/s  {cpu:6.1f} us CPU/job", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=int, nargs="?", default=3)
    parser.add_argument(
        "--huey", default=str(ROOT / ".bench" / "peers" / ".venv" / "bin" / "python")
    )
    args = parser.parse_args()
    runs, huey = args.runs, os.path.abspath(args.huey)
    print(f"load average at start {os.getloadavg()}", flush=True)
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:

        def redis_url() -> str:
            return f"{server.url}?prefix=bench-{uuid.uuid4().hex[:8]}"

        def sqlite_url() -> str:
            return f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.db"

        for name, url in (("redis", redis_url), ("sqlite", sqlite_url)):
            report(f"{name} single awaited", runs, lambda u=url: asyncio.run(single(u())))
            report(f"{name} 100 in flight", runs, lambda u=url: asyncio.run(concurrent(u())))
            report(f"{name} SyncQueue one thread", runs, lambda u=url: sync_single(u()))
            if name == "redis":
                report("redis raw EVALSHA (redis-py) floor", runs, lambda: raw_floor(redis_url()))
                if Path(huey).exists():
                    report(
                        "redis huey enqueue (LPUSH)", runs, lambda: huey_single(huey, server.url)
                    )
    print(f"load average at end {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
