"""What a rate limit costs on Redis: the same backlog with a limit that never binds and without
one, alternated round by round on a private redis-server.

    .venv/bin/python bench/rate_limit.py [--n 20000] [--rounds 7]

Two figures per variant, medians of the rounds:

* **drain**: one burst worker (concurrency 100, a no-op handler) drains ``n`` jobs: jobs/s;
* **fetch script**: the server's own time per ``job_fetch.lua`` call of 100 jobs (from
  ``INFO commandstats``), the script fetches only, with no worker: what the limit adds inside
  the atomic step, free of the client's noise.

The limit (10,000 starts per 50 ms, far above what one worker drains) only measures the work
it adds to every fetch: reading the oldest needed entry of the queue's start log, appending
the new starts and trimming it, in the same script call. The figures only mean something as a
ratio within one run (see README.md, "Noise on this machine").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel

from conveyor import JobContext, JobDef, Queue, Rate, Worker, WorkerConfig, job
from conveyor.backends.redis import RedisDriver
from conveyor.drivers.records import FetchParams, NewJob, RateLimit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import private_redis

CONCURRENCY = 100  # as the async peers of the shared benchmark
CHUNK = 1000
FETCH = 100
RATE = Rate(10_000, per=0.05)


class Noop(BaseModel):
    n: int = 0


plain = job("bench.plain", Noop, queue="plain")
limited = job("bench.limited", Noop, queue="limited", rate_limit=RATE)


async def drain(url: str, definition: JobDef[Any, None], n: int) -> float:
    """Enqueue ``n`` jobs, then time one burst worker draining them (jobs per second)."""
    queue = Queue.from_url(url)
    await queue.connect()
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        payloads = [definition.payload_type(n=start + i) for i in range(count)]
        await queue.enqueue_many([definition.request(p) for p in payloads])
    worker = Worker(
        queue, config=WorkerConfig(concurrency=CONCURRENCY, burst=True), jobs=[definition]
    )

    async def handle(payload: Any, ctx: JobContext) -> None:
        return None

    worker.register(definition, handle)
    started = time.perf_counter()
    await worker.run()
    elapsed = time.perf_counter() - started
    counts = await queue.counts(definition.queue)
    await queue.close()
    assert not any(n for state, n in counts.items() if state.value != "completed"), counts
    return n / elapsed


async def fetch_script(url: str, queue: str, rate: RateLimit | None, n: int) -> float:
    """The server's microseconds per fetch script call, leasing ``n`` jobs ``FETCH`` at a time."""
    driver = RedisDriver(url)
    await driver.open()
    stamp = time.time_ns()
    for start in range(0, n, CHUNK):
        jobs = [NewJob(f"{stamp}-{start + i}", queue, "n", b"{}") for i in range(CHUNK)]
        await driver.job_insert_many(jobs)
    # Leases that outlive the run: no worker's maintenance rescues these jobs meanwhile.
    limits = (RateLimit(queue, rate.count, rate.per),) if rate else ()
    params = FetchParams((queue,), FETCH, "w", 1e6, rate_limits=limits)
    with redis.Redis.from_url(url) as raw:
        raw.config_resetstat()
        while await driver.job_fetch(params):
            pass
        stats = raw.info("commandstats")["cmdstat_evalsha"]
    await driver.close()
    return float(stats["usec_per_call"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    limit = RateLimit("", RATE.count, RATE.per)  # applied to each round's own queue
    with private_redis(Path(".bench/rate-limit").resolve(), None) as port:
        url = f"redis://127.0.0.1:{port}/0"
        for round_ in range(args.rounds):
            variants = [("without", plain, None), ("with", limited, limit)]
            for label, definition, rate in variants if round_ % 2 == 0 else variants[::-1]:
                rate_ = asyncio.run(drain(url, definition, args.n))
                fetched = f"{definition.queue}-fetch-{round_}"  # a queue of its own
                cost = asyncio.run(fetch_script(url, fetched, rate, args.n))
                figures.setdefault(f"drain {label}", []).append(rate_)
                figures.setdefault(f"script {label}", []).append(cost)
                print(
                    f"round {round_ + 1} {label:>7} limit: drain {rate_:6.0f} jobs/s, "
                    f"fetch script {cost:6.0f} µs per {FETCH} jobs",
                    file=sys.stderr,
                )
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"{args.n} jobs, median of {args.rounds} rounds, {RATE!r} (never binding):")
    for what, unit in (("drain", "jobs/s"), ("script", f"µs per fetch of {FETCH}")):
        without, with_ = median[f"{what} without"], median[f"{what} with"]
        change = with_ / without - 1 if what == "script" else 1 - with_ / without
        print(
            f"  {what:6}  without {without:7.0f}  with {with_:7.0f}  {unit}: "
            f"cost {100 * change:.1f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
