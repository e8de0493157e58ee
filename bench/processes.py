"""What ``conveyor worker --processes 2`` gains over one worker process, on a private Redis.

    .venv/bin/python bench/processes.py [--n 20000] [--rounds 5] [--work 0,50]

Per round and per handler variant, the same backlog of ``n`` jobs is drained once by one
worker process (``conveyor worker ... --burst``) and once by the supervisor with two
(``--processes 2 --burst``), in alternating order. Drain is measured as the shared
benchmark does (../shared/bench/peers/README.md): every handler makes the shared accounting
call (``benchlib.record_async``: one pipelined round trip to db 15) and the rate is
(n − 1) / (last handler start − first handler start), start-up excluded. Both commands run
with concurrency 100 per process, as the async peers do.

Handler variants (``--work``, SHA-256 rounds over 1 KiB before the accounting call, on the
event loop, ~3.8 µs each on this machine): ``0`` is the shared no-op handler; ``50``
(~0.2 ms of CPU per job) is a CPU-bound-ish one, where a single process is bound by its one
core. The figures to set beside it in ../shared/bench/peers/RESULTS.md are the multi-process
peers' drains of the no-op job: huey ``-k process -w 2`` (≈ 3.9k/s against ≈ 2.1k/s for
``-k thread -w 8``) and dramatiq ``--processes 2 --threads 8`` (≈ 3.9k/s). Only ratios within
one run mean anything on this shared 2-vCPU machine (see README.md, "Noise on this machine").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis

from conveyor import Queue

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from run import private_redis  # noqa: E402

REPO = BENCH.parent
PEERS = (REPO / "../shared/bench/peers").resolve()
CONVEYOR = Path(sys.executable).with_name("conveyor")
CHUNK = 1000
TARGET = "processes_app:worker"
STATS = ("bench:count", "bench:first", "bench:last")


async def enqueue(url: str, n: int, rounds: int) -> None:
    os.environ.setdefault("CONVEYOR_URL", url)
    sys.path.insert(0, str(PEERS))
    from processes_app import Work, work

    queue = Queue.from_url(url)
    async with queue:
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            await queue.enqueue_many([work.request(Work(rounds=rounds)) for _ in range(count)])


def drain(url: str, stats_url: str, n: int, rounds: int, processes: int) -> float:
    """Flush, enqueue ``n`` jobs, drain them with ``processes`` worker processes: jobs/s."""
    with redis.Redis.from_url(url) as r:
        r.flushdb()
    asyncio.run(enqueue(url, n, rounds))
    with redis.Redis.from_url(stats_url) as stats:
        stats.delete(*STATS)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(BENCH), str(PEERS)]),
            "CONVEYOR_URL": url,
            "BENCH_STATS_URL": stats_url,
        }
        argv = [str(CONVEYOR), "worker", TARGET, "--burst", "--log-level", "WARNING"]
        if processes > 1:
            argv += ["--processes", str(processes)]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=BENCH, env=env, timeout=600, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited with status {done.returncode}")
        count = int(stats.get("bench:count") or 0)
        first = stats.zscore("bench:first", "t")
        last = stats.zscore("bench:last", "t")
    if count != n or first is None or last is None:
        raise SystemExit(f"{count} of {n} jobs ran (a burst worker exits when all are done)")
    wall = time.monotonic() - started
    rate = (n - 1) / (last - first)
    print(
        f"  work={rounds:<4} processes={processes}: {rate:7.0f} jobs/s "
        f"(wall incl. start-up {wall:.1f}s)",
        file=sys.stderr,
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", default="0,50", help="SHA-256 rounds per job, comma-separated")
    args = parser.parse_args()
    if not (PEERS / "benchlib.py").is_file():
        raise SystemExit(f"no benchlib.py in {PEERS} (the shared peers folder)")
    works = [int(w) for w in args.work.split(",")]
    figures: dict[tuple[int, int], list[float]] = {}
    with private_redis((REPO / ".bench/processes").resolve(), None) as port:
        url, stats_url = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/15"
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            for rounds in works:
                order = (1, 2) if round_ % 2 == 0 else (2, 1)
                for processes in order:
                    rate = drain(url, stats_url, args.n, rounds, processes)
                    figures.setdefault((rounds, processes), []).append(rate)
    load = os.getloadavg()[0]
    print(f"{args.n} jobs per drain, median of {args.rounds} rounds (load average {load:.2f}):")
    print("| handler | 1 process jobs/s | --processes 2 jobs/s | ratio (median of rounds) |")
    print("|---|---|---|---|")
    for rounds in works:
        one, two = figures[(rounds, 1)], figures[(rounds, 2)]
        ratios = [b / a for a, b in zip(one, two, strict=True)]
        what = "shared no-op" if rounds == 0 else f"{rounds} SHA-256 rounds + no-op"
        print(
            f"| {what} | {statistics.median(one):,.0f} | {statistics.median(two):,.0f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
