"""How long the dashboard takes to make its pages over a queue of 1,000,000 jobs, on Redis and
on PostgreSQL (private servers started here, as the test suite starts them).

    .venv/bin/python bench/dashboard.py [--jobs 1000000] [--backends redis,postgres]
                                        [--requests 20]

Per backend: ``--jobs`` queued jobs in queue ``bench`` (``enqueue_many`` in batches of 5,000),
plus 2,000 jobs in queue ``mixed`` that a burst worker runs, half of them failing, so that
completed and failed lists have something in them. The dashboard then runs under uvicorn in
this process; after its overview cache has been read once, each page is requested
``--requests`` times and the table gives the median and the slowest of its server time (the
``Server-Timing`` header: from the request reaching the app to its response starting) and the
median time the client waited. Target: under 100 ms for the overview and a page of jobs.

The background read of the counts (``Queue.queues()``, every few seconds, never in a request)
is reported beside, as "counts refresh".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.postgres_server import PostgresServer  # noqa: E402
from tests.servers.redis_server import RedisServer  # noqa: E402

from conveyor import JobContext, Queue, Worker, WorkerConfig, job  # noqa: E402
from conveyor.dashboard import conveyor_dashboard  # noqa: E402

TARGET_MS = 100.0
BATCH = 5_000
MIXED = 2_000


class Item(BaseModel):
    n: int
    note: str = "a payload of a typical size, with a few fields in it"


bulk = job("bench.dash.item", Item, queue="bench")
mixed = job("bench.dash.mixed", Item, queue="mixed", attempts=1)


def log(message: str) -> None:
    print(f"[bench-dashboard] {message}", file=sys.stderr, flush=True)


async def fill(url: str, jobs: int) -> None:
    async with Queue.from_url(url) as queue:
        started = time.perf_counter()
        done = 0
        while done < jobs:
            count = min(BATCH, jobs - done)
            await queue.enqueue_many([bulk.request(Item(n=done + i)) for i in range(count)])
            done += count
            if done % 100_000 == 0:
                log(f"{done:,} jobs enqueued ({done / (time.perf_counter() - started):,.0f}/s)")
        await queue.enqueue_many([mixed.request(Item(n=i)) for i in range(MIXED)])
        worker = Worker(
            queue, jobs=[mixed], queues=["mixed"], config=WorkerConfig(concurrency=50, burst=True)
        )

        @worker.handles(mixed)
        async def run_mixed(payload: Item, ctx: JobContext) -> None:
            if payload.n % 2:
                raise RuntimeError(f"item {payload.n} failed on purpose")

        await worker.run()
        log(f"filled in {time.perf_counter() - started:.0f} s")


class Served:
    def __init__(self, app: Any) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def timed(client: httpx.Client, path: str, requests: int) -> tuple[float, float, float]:
    """Median and slowest server time, and median client time, in ms, of ``requests`` GETs."""
    server: list[float] = []
    client_ms: list[float] = []
    for _ in range(2):  # warm up (templates compiled, connections opened)
        client.get(path).raise_for_status()
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        client_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        timing = response.headers["server-timing"]
        server.append(float(timing.split("dur=")[1]))
    return statistics.median(server), max(server), statistics.median(client_ms)


def measure(url: str, requests: int) -> list[tuple[str, float, float, float]]:
    app = conveyor_dashboard(Queue.from_url(url))
    served = Served(app)
    rows: list[tuple[str, float, float, float]] = []
    try:
        with httpx.Client(base_url=served.url, timeout=120) as client:
            client.get("/").raise_for_status()  # starts the cache and waits for its first read
            cache = app.app.state.cache
            deadline = time.monotonic() + 300
            while cache.snapshot.read_at is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the overview cache was never filled")
                time.sleep(0.1)
            first = client.get("/queues/bench").text
            seqs = [int(s) for s in _attr(first, "data-seq")]
            middle = seqs[0] // 2 if seqs else 1
            failed = client.get("/queues/mixed?state=failed").text
            job_id = _attr(failed, "data-job-id")[0]
            pages = [
                ("overview", "/"),
                ("overview (polled part)", "/?partial=1"),
                ("queue: newest 50, every state", "/queues/bench"),
                ("queue: 50 queued", "/queues/bench?state=queued"),
                ("queue: 50 every state, halfway", f"/queues/bench?before={middle}"),
                ("queue: 50 failed", "/queues/mixed?state=failed"),
                ("job (failed, traceback)", f"/jobs/{job_id}"),
                ("workers", "/workers"),
                ("search: a job id", f"/queues/mixed?q={job_id}"),
                # Reads past every other name's jobs: bounded by the page's time limit.
                ("search: a name, no match", "/queues/bench?q=no.such.name"),
            ]
            for label, path in pages:
                rows.append((label, *timed(client, path, 3 if "no match" in label else requests)))
                log(f"{label}: median {rows[-1][1]:.1f} ms")
            refresh = cache.snapshot.took * 1000
            rows.append(("counts refresh (background)", refresh, refresh, float("nan")))
    finally:
        served.stop()
    return rows


def _attr(html: str, name: str) -> list[str]:
    import re

    return re.findall(rf'{name}="([^"]+)"', html)


@contextmanager
def backend(name: str) -> Iterator[str]:
    if name == "redis":
        with RedisServer() as redis_server:
            yield redis_server.url
    elif name == "postgres":
        with PostgresServer() as pg_server:
            yield pg_server.url
    else:
        raise SystemExit(f"unknown backend {name!r}: redis or postgres")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--backends", default="redis,postgres")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    # The mixed queue's failures are on purpose: their log lines would bury the table.
    logging.getLogger("conveyor.worker").setLevel(logging.CRITICAL)
    results: dict[str, list[tuple[str, float, float, float]]] = {}
    for name in args.backends.split(","):
        with backend(name) as url:
            log(f"{name}: filling {args.jobs:,} jobs")
            asyncio.run(fill(url, args.jobs))
            results[name] = measure(url, args.requests)
    print(f"\nDashboard server time over {args.jobs:,} queued jobs, {args.requests} requests each")
    print(f"{'backend':<9} {'page':<32} {'median ms':>10} {'max ms':>8} {'client ms':>10}  target")
    ok = True
    for name, rows in results.items():
        for label, median, slowest, client_ms in rows:
            targeted = label.startswith(("overview", "queue: newest"))
            verdict = ("ok" if median < TARGET_MS else "MISSED") if targeted else ""
            ok &= verdict != "MISSED"
            print(
                f"{name:<9} {label:<32} {median:>10.1f} {slowest:>8.1f} {client_ms:>10.1f}  "
                f"{verdict}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
