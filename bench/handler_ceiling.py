"""One worker process against the handler-only ceiling, with the shared accounting handler.

The ceiling is what the shared handler alone can do in one process: ``benchlib.record_async``
(one redis.asyncio pipeline to the stats db, the call every peer's handler makes), awaited by
``--concurrency`` coroutines with no queue at all, on the event loop ``conveyor worker`` uses.
Then one in-process Conveyor worker (the same concurrency, burst) drains as many jobs whose
handler is that call. Both rates are counted the same way, by the accounting itself: jobs over
the time from the first call to the last. Rounds alternate the two; the issue's target is a
median ratio of 0.9 or more ("one process within 10 % of the handler-only ceiling").

Starts a private redis-server on a free port (never 6379); needs the shared ``benchlib``
(``--peers-dir``, default ``../shared/bench/peers``).

    .venv/bin/python bench/handler_ceiling.py --jobs 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import statistics
import sys
from pathlib import Path
from types import ModuleType

import redis
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.servers.redis_server import RedisServer  # noqa: E402  (after the path is set)

from conveyor import JobContext, Queue, Worker, WorkerConfig, _eventloop, job  # noqa: E402
from conveyor.runtime.gc_tuning import WORKER_GC_THRESHOLD  # noqa: E402


class Account(BaseModel):
    n: int = 0


account = job("bench.account", Account, result=None, queue="ceiling")


def _rate(stats: redis.Redis) -> float:
    """Jobs per second from the accounting keys: the count over first-to-last call."""
    count = int(stats.get("bench:count") or 0)
    first = stats.zscore("bench:first", "t")
    last = stats.zscore("bench:last", "t")
    if count < 2 or first is None or last is None or last <= first:
        raise RuntimeError(f"the accounting recorded too little to time: {count} calls")
    return count / (last - first)


async def _handler_alone(bench: ModuleType, jobs: int, concurrency: int) -> None:
    left = jobs

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await bench.record_async()

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def _one_worker(
    bench: ModuleType, url: str, jobs: int, concurrency: int, gc_threshold: int | None
) -> None:
    async with Queue.from_url(url) as queue:
        for start in range(0, jobs, 1000):
            await queue.enqueue_many(
                [account.request(Account(n=i)) for i in range(start, min(start + 1000, jobs))]
            )
        # As `conveyor worker` runs it (its --gc-threshold default), unless told otherwise.
        config = WorkerConfig(burst=True, queues=("ceiling",), gc_threshold=gc_threshold)
        worker = Worker(queue, concurrency=concurrency, config=config)

        @worker.handles(account)
        async def run(payload: Account, ctx: JobContext) -> None:
            await bench.record_async()

        await worker.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=WORKER_GC_THRESHOLD,
        help="the worker's WorkerConfig(gc_threshold=), as `conveyor worker --gc-threshold`; "
        "0 leaves the collector alone",
    )
    parser.add_argument(
        "--peers-dir", type=Path, default=ROOT.parent / "shared" / "bench" / "peers"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with RedisServer() as server:
        # benchlib reads where to account at import: the private server's db 15.
        os.environ["BENCH_STATS_URL"] = server.url.rsplit("/", 1)[0] + "/15"
        sys.path.insert(0, str(args.peers_dir.resolve()))
        bench = importlib.import_module("benchlib")
        stats = redis.Redis.from_url(os.environ["BENCH_STATS_URL"])
        ratios: list[float] = []
        for round_no in range(1, args.rounds + 1):
            rates: dict[str, float] = {}
            order = ["alone", "worker"] if round_no % 2 else ["worker", "alone"]
            for kind in order:
                stats.flushdb()
                if kind == "alone":
                    _eventloop.run(_handler_alone(bench, args.jobs, args.concurrency))
                else:
                    redis.Redis.from_url(server.url).flushdb()
                    _eventloop.run(
                        _one_worker(
                            bench,
                            server.url,
                            args.jobs,
                            args.concurrency,
                            args.gc_threshold or None,
                        )
                    )
                rates[kind] = _rate(stats)
            ratios.append(rates["worker"] / rates["alone"])
            print(
                f"round {round_no}: handler alone {rates['alone']:,.0f} calls/s, one worker "
                f"{rates['worker']:,.0f} jobs/s, ratio {ratios[-1]:.2f}",
                flush=True,
            )
        print(
            f"median ratio of one worker to the handler-only ceiling over {args.rounds} rounds: "
            f"{statistics.median(ratios):.2f} (target >= 0.90)"
        )


if __name__ == "__main__":
    main()
