"""What groups cost on Redis, fetch by fetch (bench/groups.py measures the drains alone): the
same backlog as grouped jobs (100 groups, with a concurrency and a rate that never bind) and as
plain jobs, alternated round by round on a private redis-server.

    .venv/bin/python bench/groups_fetch.py [--n 20000] [--rounds 7] [--groups 100] [--plain-only]

Two figures per variant, medians of the rounds (as bench/rate_limit.py measures a queue's rate
limit):

* **drain**: one burst worker (concurrency 100, a no-op handler) drains ``n`` jobs: jobs/s;
* **fetch script**: the server's own time per ``job_fetch.lua`` call of 100 jobs (from
  ``INFO commandstats``), fetches only, with no worker: what serving groups adds inside the
  atomic step, free of the client's noise.

``--plain-only`` measures the plain variant alone, with nothing but what every version of the
driver has: run it on two checkouts to compare the plain path before and after a change. The
figures only mean something as a ratio within one run (see README.md, "Noise on this
machine").
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

from conveyor import JobDef, Rate, job
from conveyor.backends.redis import RedisDriver
from conveyor.drivers.records import FetchParams, NewJob

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rate_limit import drain
from run import private_redis

CONCURRENCY = 100  # as the async peers of the shared benchmark
CHUNK = 1000
FETCH = 100
GROUP_CONCURRENCY = 1000  # never binds: one worker runs 100 at a time
GROUP_RATE = Rate(1000, per=0.05)  # never binds either (at most 1,000 a window)


class Noop(BaseModel):
    n: int = 0


plain = job("bench.plain", Noop, queue="plain")


def grouped_definition(groups: int) -> JobDef[Noop, None]:
    kwargs: dict[str, Any] = {
        "group_key": lambda p: f"t{p.n % groups}",
        "group_concurrency": GROUP_CONCURRENCY,
        "group_rate": GROUP_RATE,
    }
    return job("bench.grouped", Noop, queue="grouped", **kwargs)


async def fetch_script(url: str, queue: str, groups: int, n: int) -> float:
    """The server's microseconds per fetch script call, leasing ``n`` jobs ``FETCH`` at a time
    (grouped in ``groups`` groups, or plain when 0)."""
    driver = RedisDriver(url)
    await driver.open()
    stamp = time.time_ns()
    extra: dict[str, Any] = {}
    for start in range(0, n, CHUNK):
        jobs: list[NewJob] = []
        for i in range(start, start + CHUNK):
            if groups:
                from conveyor.drivers.records import JobGroup

                limits = JobGroup(f"t{i % groups}", GROUP_CONCURRENCY, 1000, 0.05)
                extra = {"group": limits}
            jobs.append(NewJob(f"{stamp}-{i}", queue, "n", b"{}", **extra))
        await driver.job_insert_many(jobs)
    # Leases that outlive the run: no worker's maintenance rescues these jobs meanwhile.
    params = FetchParams((queue,), FETCH, "w", 1e6)
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
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--plain-only", action="store_true")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    variants: list[tuple[str, JobDef[Noop, None], int]] = [("plain", plain, 0)]
    if not args.plain_only:
        variants.append(("grouped", grouped_definition(args.groups), args.groups))
    with private_redis(Path(".bench/groups-fetch").resolve(), None) as port:
        url = f"redis://127.0.0.1:{port}/0"
        for round_ in range(args.rounds):
            for label, definition, groups in variants if round_ % 2 == 0 else variants[::-1]:
                rate_ = asyncio.run(drain(url, definition, args.n))
                fetched = f"{definition.queue}-fetch-{round_}"  # a queue of its own
                cost = asyncio.run(fetch_script(url, fetched, groups, args.n))
                figures.setdefault(f"drain {label}", []).append(rate_)
                figures.setdefault(f"script {label}", []).append(cost)
                print(
                    f"round {round_ + 1} {label:>7}: drain {rate_:6.0f} jobs/s, "
                    f"fetch script {cost:6.0f} µs per {FETCH} jobs",
                    file=sys.stderr,
                )
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"{args.n} jobs, median of {args.rounds} rounds, {args.groups} groups:")
    for what, unit in (("drain", "jobs/s"), ("script", f"µs per fetch of {FETCH}")):
        base = median[f"{what} plain"]
        if args.plain_only:
            print(f"  {what:6}  plain {base:7.0f} {unit}")
            continue
        other = median[f"{what} grouped"]
        change = other / base - 1 if what == "script" else 1 - other / base
        print(
            f"  {what:6}  plain {base:7.0f}  grouped {other:7.0f}  {unit}: "
            f"cost {100 * change:.1f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
