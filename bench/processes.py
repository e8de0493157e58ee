"""What ``conveyor worker --processes 2`` gains over one worker process, on a private Redis.

    .venv/bin/python bench/processes.py [--n 20000] [--rounds 5] [--work 0,250]

Per round and per handler variant, the same backlog of ``n`` jobs is drained once by one
worker process (``conveyor worker ... --burst``) and once by the supervisor with two
(``--processes 2 --burst``), in alternating order. Drain is measured as the shared
benchmark does (../shared/bench/peers/README.md): every handler makes the shared accounting
call (``benchlib.record_async``: one pipelined round trip to db 15) and the rate is
(n - 1) / (last handler start - first handler start), start-up excluded. Both commands run
with concurrency 100 per process, as the async peers do.

Handler variants (``--work``: SHA-256 rounds over 1 KiB before the accounting call, on the
event loop, about 1 µs of CPU each on this machine): ``0`` is the shared no-op handler;
``250`` (~0.25 ms of CPU per job, about what the worker itself spends per job) is a
CPU-bound-ish one, where one process is bound by its one core. Besides the drain rates, the
table gives the CPU per job of the worker command's whole process tree (start-up and shutdown
taken off) and of redis-server, and the drain those allow on 2 vCPUs (each worker process at
most one core; workers and Redis together at most two): a ratio that a shared machine's load
disturbs far less than the rates. The figures to set beside it in
../shared/bench/peers/RESULTS.md are the multi-process peers' drains of the no-op job: huey
``-k process -w 2`` (~3.9k/s against ~2.1k/s for ``-k thread -w 8``, 1.85x) and dramatiq
``--processes 2 --threads 8`` (~3.9k/s). Only ratios within one run mean anything on this
shared machine (see README.md, "Noise on this machine"). While other sessions keep both vCPUs
busy the rates measure the scheduler more than Conveyor: autogroup scheduling gives each
session a share of the CPU, each worker command runs in a session of its own here, and the
supervisor starts each worker process in one of its own, so two processes win two shares; the
CPU ceiling ratio is the figure a loaded machine disturbs least.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
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


def tree_cpu() -> float:
    """CPU seconds of every reaped descendant: a worker command's whole tree once it exited
    (supervisor, worker processes and their lease renewal processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass
class Drain:
    rate: float  # jobs/s, first to last handler start
    worker_cpu: float  # CPU seconds of the worker command's process tree, start-up included
    redis_cpu: float  # CPU seconds of redis-server over the command's run


def drain(url: str, stats_url: str, n: int, rounds: int, processes: int) -> Drain:
    """Flush, enqueue ``n`` jobs, drain them with ``processes`` worker processes."""
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
        started, cpu, server = time.monotonic(), tree_cpu(), redis_cpu(stats)
        # A session of its own: one autogroup of the scheduler, whatever else this one runs.
        done = subprocess.run(
            argv, cwd=BENCH, env=env, timeout=600, check=False, start_new_session=True
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited with status {done.returncode}")
        cpu, server = tree_cpu() - cpu, redis_cpu(stats) - server
        count = int(stats.get("bench:count") or 0)
        first = stats.zscore("bench:first", "t")
        last = stats.zscore("bench:last", "t")
    if n == 0:  # the cost of starting and stopping the command, to take off the others
        return Drain(0.0, cpu, server)
    if count != n or first is None or last is None:
        raise SystemExit(f"{count} of {n} jobs ran (a burst worker exits when all are done)")
    wall = time.monotonic() - started
    rate = (n - 1) / (last - first)
    print(
        f"  work={rounds:<4} processes={processes}: {rate:7.0f} jobs/s "
        f"(wall incl. start-up {wall:.1f}s, worker CPU {cpu:.1f}s, Redis CPU {server:.1f}s)",
        file=sys.stderr,
    )
    return Drain(rate, cpu, server)


def ceiling(processes: int, worker_us: float, redis_us: float) -> float:
    """The drain the CPU allows on this 2-core machine: each worker process is one event loop
    on one core at most, and workers plus Redis share the two cores."""
    return min(processes * 1e6 / worker_us, 2e6 / (worker_us + redis_us))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", default="0,250", help="SHA-256 rounds per job, comma-separated")
    args = parser.parse_args()
    if not (PEERS / "benchlib.py").is_file():
        raise SystemExit(f"no benchlib.py in {PEERS} (the shared peers folder)")
    works = [int(w) for w in args.work.split(",")]
    figures: dict[tuple[int, int], list[Drain]] = {}
    with private_redis((REPO / ".bench/processes").resolve(), None) as port:
        url, stats_url = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/15"
        idle = {p: drain(url, stats_url, 0, 0, p) for p in (1, 2)}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            for rounds in works:
                order = (1, 2) if round_ % 2 == 0 else (2, 1)
                for processes in order:
                    measured = drain(url, stats_url, args.n, rounds, processes)
                    figures.setdefault((rounds, processes), []).append(measured)
    load = os.getloadavg()[0]
    print(
        f"{args.n} jobs per drain, median of {args.rounds} rounds, 1-minute load average at "
        f"the end {load:.2f} (2 vCPUs):"
    )
    print()
    print(
        "| handler | processes | drain jobs/s (best) | ratio to 1 process (best/best) | "
        "worker CPU µs/job | Redis CPU µs/job | CPU ceiling jobs/s | ceiling ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rounds in works:
        what = "shared no-op" if rounds == 0 else f"{rounds} SHA-256 rounds + no-op"
        ceilings = {}
        for processes in (1, 2):
            runs = figures[(rounds, processes)]
            worker_us = statistics.median(
                1e6 * (d.worker_cpu - idle[processes].worker_cpu) / args.n for d in runs
            )
            redis_us = statistics.median(1e6 * d.redis_cpu / args.n for d in runs)
            ceilings[processes] = ceiling(processes, worker_us, redis_us)
            rate = statistics.median(d.rate for d in runs)
            best = max(d.rate for d in runs)
            if processes == 1:
                ratio, ceiling_ratio = "", ""
            else:
                ratios = [b.rate / a.rate for a, b in zip(figures[(rounds, 1)], runs, strict=True)]
                best_one = max(d.rate for d in figures[(rounds, 1)])
                ratio = (
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}; "
                    f"{best / best_one:.2f})"
                )
                ceiling_ratio = f"{ceilings[2] / ceilings[1]:.2f}"
            print(
                f"| {what} | {processes} | {rate:,.0f} ({best:,.0f}) | {ratio} | {worker_us:.0f} | "
                f"{redis_us:.0f} | {ceilings[processes]:,.0f} | {ceiling_ratio} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
