"""What groups cost on Redis: the same backlog drained as plain jobs and as grouped jobs whose
limits never bind, alternated round by round on a private redis-server.

    .venv/bin/python bench/groups.py [--n 20000] [--rounds 7] [--keys 100]

Three variants, medians of the rounds, one burst worker (concurrency 100, a no-op handler):

* **plain**: no group;
* **grouped**: ``group_key`` spreads the jobs over ``--keys`` groups, served round-robin,
  with a per-key concurrency and rate far above what the worker reaches (what the groups'
  bookkeeping costs, not what a limit holds back);
* **serial**: the same keys with ``group_concurrency=1``: at most ``--keys`` jobs run at once,
  so this one measures a binding limit (reported, not part of the target).

Also the server's mean time per script call (``INFO commandstats``, every script of the drain).
The figures only mean something as ratios within one run (see README.md, "Noise on this
machine").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import redis
from pydantic import BaseModel

from conveyor import JobDef, Rate, job

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rate_limit import drain
from run import private_redis


class Keyed(BaseModel):
    n: int = 0


def definitions(keys: int) -> dict[str, JobDef[Keyed, None]]:
    def key(p: Keyed) -> str:
        return str(p.n % keys)

    return {
        "plain": job("bench.plain", Keyed, queue="plain"),
        "grouped": job(
            "bench.grouped",
            Keyed,
            queue="grouped",
            group_key=key,
            group_concurrency=10_000,
            group_rate=Rate(1_000, per=0.001),
        ),
        "serial": job("bench.serial", Keyed, queue="serial", group_key=key, group_concurrency=1),
    }


def script_usec(url: str) -> float:
    with redis.Redis.from_url(url) as raw:
        stats = raw.info("commandstats").get("cmdstat_evalsha", {})
        return float(stats.get("usec_per_call", 0.0))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    variants = definitions(args.keys)
    figures: dict[str, list[float]] = {}
    with private_redis(Path(".bench/groups").resolve(), None) as port:
        url = f"redis://127.0.0.1:{port}/0"
        for round_ in range(args.rounds):
            order = list(variants.items())
            for label, definition in order if round_ % 2 == 0 else order[::-1]:
                with redis.Redis.from_url(url) as raw:
                    raw.config_resetstat()
                rate = asyncio.run(drain(url, definition, args.n))
                usec = script_usec(url)
                figures.setdefault(label, []).append(rate)
                figures.setdefault(f"{label} script", []).append(usec)
                print(
                    f"round {round_ + 1} {label:>8}: {rate:6.0f} jobs/s, "
                    f"{usec:5.0f} µs per script call",
                    file=sys.stderr,
                )
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"{args.n} jobs over {args.keys} keys, median of {args.rounds} rounds:")
    plain = median["plain"]
    for label in ("plain", "grouped", "serial"):
        cost = 100 * (1 - median[label] / plain)
        print(
            f"  {label:8} {median[label]:7.0f} jobs/s  cost {cost:5.1f} %"
            f"  ({median[label + ' script']:.0f} µs per script call)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
