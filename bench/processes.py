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
table gives the CPU per job of the worker command's whole process tree and of redis-server,
read as the shared runner reads them, from the first to the last job counted (start-up and
shutdown outside), and the drain those allow on 2 vCPUs (each worker process at
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

``--work`` also takes ``noop``: no accounting call either, the handler only counts the job in
memory (bench/noop_record.py), so the drain shows the queue machinery alone. ``make bench``
runs this as its scaling step (``--work 0,noop``) on its own private Redis (``--redis-url``,
``--stats-url``) and the peers copy (``--peers-dir``), and reads the figures from ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


CLK = os.sysconf("SC_CLK_TCK")


def tree_cpu() -> float:
    """CPU seconds of every reaped descendant: a worker command's whole tree once it exited
    (supervisor, worker processes and their lease renewal processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def live_tree_cpu(root: int) -> float:
    """CPU seconds so far of the process ``root`` and all its live descendants, each with the
    CPU of the children it has reaped: the worker processes run in sessions of their own, so
    the shared runner's reading of one process group would miss them."""
    procs: dict[int, tuple[int, float]] = {}  # pid -> (ppid, utime+stime+cutime+cstime)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        procs[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / CLK)
    tree, total, grew = {root}, 0.0, True
    while grew:
        grew = False
        for pid, (ppid, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    for pid in tree:
        total += procs.get(pid, (0, 0.0))[1]
    return total


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass
class Drain:
    rate: float  # jobs/s, first to last handler start
    worker_us: float  # CPU µs per job of the worker command's tree, first to last job counted
    redis_us: float  # CPU µs per job of redis-server over the same interval
    command_cpu: float  # CPU seconds of the whole command (start-up and shutdown included)


def drain(
    url: str, stats_url: str, n: int, rounds: int, processes: int, variant: str = ""
) -> Drain:
    """Flush, enqueue ``n`` jobs, drain them with ``processes`` worker processes
    (``variant="noop"``: the handler counts in memory instead of the accounting call).

    CPU per job as the shared runner reads it: from the moment the accounting counter first
    moves to the moment it reaches ``n`` (polled every 10 ms), divided by the jobs counted in
    between; start-up and shutdown are outside that interval."""
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
            "BENCH_VARIANT": variant,
        }
        argv = [str(CONVEYOR), "worker", TARGET, "--burst", "--log-level", "WARNING"]
        if processes > 1:
            argv += ["--processes", str(processes)]
        started, command_cpu = time.monotonic(), tree_cpu()
        # A session of its own: one autogroup of the scheduler, whatever else this one runs.
        proc = subprocess.Popen(argv, cwd=BENCH, env=env, start_new_session=True)
        first_seen: tuple[int, float, float] | None = None  # count, worker CPU, Redis CPU
        last_seen: tuple[int, float, float] | None = None
        read_at = 0.0
        try:
            while proc.poll() is None and time.monotonic() - started < 600:
                count = int(stats.get("bench:count") or 0)
                if count and first_seen is None:
                    first_seen = (count, live_tree_cpu(proc.pid), redis_cpu(stats))
                    read_at = time.monotonic()
                elif count >= n or (
                    # a reading every 0.1 s too, in case the last jobs are only counted as the
                    # command exits (the no-op handler's final flush)
                    first_seen and count > first_seen[0] and time.monotonic() - read_at > 0.1
                ):
                    last_seen = (count, live_tree_cpu(proc.pid), redis_cpu(stats))
                    read_at = time.monotonic()
                if count >= n:
                    break
                time.sleep(0.01)
            returncode = proc.wait(600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited with status {returncode}")
        command_cpu = tree_cpu() - command_cpu
        count = int(stats.get("bench:count") or 0)
        first = stats.zscore("bench:first", "t")
        last = stats.zscore("bench:last", "t")
    if count != n or first is None or last is None:
        raise SystemExit(f"{count} of {n} jobs ran (a burst worker exits when all are done)")
    if first_seen is None or last_seen is None or last_seen[0] <= first_seen[0]:
        raise SystemExit("the drain was over before its CPU could be read: raise --n")
    jobs = last_seen[0] - first_seen[0]
    worker_us = 1e6 * (last_seen[1] - first_seen[1]) / jobs
    redis_us = 1e6 * (last_seen[2] - first_seen[2]) / jobs
    wall = time.monotonic() - started
    rate = (n - 1) / (last - first)
    print(
        f"  work={variant or rounds:<4} processes={processes}: {rate:7.0f} jobs/s, CPU/job "
        f"worker {worker_us:.0f} µs, Redis {redis_us:.0f} µs (wall incl. start-up {wall:.1f}s, "
        f"whole command's CPU {command_cpu:.1f}s)",
        file=sys.stderr,
    )
    return Drain(rate, worker_us, redis_us, command_cpu)


def ceiling(processes: int, worker_us: float, redis_us: float) -> float:
    """The drain the CPU allows on this 2-core machine: each worker process is one event loop
    on one core at most, and workers plus Redis share the two cores."""
    return min(processes * 1e6 / worker_us, 2e6 / (worker_us + redis_us))


def handler_of(item: str) -> tuple[int, str]:
    """A ``--work`` item: (SHA-256 rounds, BENCH_VARIANT); ``noop`` is (0, "noop")."""
    return (0, "noop") if item == "noop" else (int(item), "")


def describe(item: str) -> str:
    if item == "noop":
        return "no-op (in-memory counter)"
    return "shared no-op" if item == "0" else f"{item} SHA-256 rounds + no-op"


def summarize(
    works: list[str], figures: dict[tuple[str, int], list[Drain]]
) -> list[dict[str, Any]]:
    """One entry per (handler, processes): medians, ranges, ratios to one process."""
    rows: list[dict[str, Any]] = []
    for item in works:
        ceilings: dict[int, float] = {}
        for processes in (1, 2):
            runs = figures[(item, processes)]
            worker_us = statistics.median(d.worker_us for d in runs)
            redis_us = statistics.median(d.redis_us for d in runs)
            ceilings[processes] = ceiling(processes, worker_us, redis_us)
            row: dict[str, Any] = {
                "work": item,
                "handler": describe(item),
                "processes": processes,
                "rates": [d.rate for d in runs],
                "rate": statistics.median(d.rate for d in runs),
                "best": max(d.rate for d in runs),
                "worker_cpu_us_per_job": worker_us,
                "redis_cpu_us_per_job": redis_us,
                "ceiling": ceilings[processes],
            }
            if processes == 2:
                ones = figures[(item, 1)]
                ratios = [b.rate / a.rate for a, b in zip(ones, runs, strict=True)]
                row["ratios"] = ratios
                row["ratio"] = statistics.median(ratios)
                row["best_ratio"] = row["best"] / max(d.rate for d in ones)
                row["ceiling_ratio"] = ceilings[2] / ceilings[1]
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], n: int, rounds: int) -> None:
    load = os.getloadavg()[0]
    print(
        f"{n} jobs per drain, median of {rounds} rounds, 1-minute load average at "
        f"the end {load:.2f} (2 vCPUs):"
    )
    print()
    print(
        "| handler | processes | drain jobs/s (best) | ratio to 1 process (best/best) | "
        "worker CPU µs/job | Redis CPU µs/job | CPU ceiling jobs/s | ceiling ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = ceiling_ratio = ""
        if "ratio" in r:
            ratio = (
                f"{r['ratio']:.2f} ({min(r['ratios']):.2f}-{max(r['ratios']):.2f}; "
                f"{r['best_ratio']:.2f})"
            )
            ceiling_ratio = f"{r['ceiling_ratio']:.2f}"
        print(
            f"| {r['handler']} | {r['processes']} | {r['rate']:,.0f} ({r['best']:,.0f}) | {ratio} "
            f"| {r['worker_cpu_us_per_job']:.0f} | {r['redis_cpu_us_per_job']:.0f} | "
            f"{r['ceiling']:,.0f} | {ceiling_ratio} |"
        )


def measure(
    url: str, stats_url: str, n: int, rounds: int, works: list[str]
) -> dict[tuple[str, int], list[Drain]]:
    figures: dict[tuple[str, int], list[Drain]] = {}
    for round_ in range(rounds):
        print(f"round {round_ + 1}/{rounds}", file=sys.stderr)
        for item in works:
            sha_rounds, variant = handler_of(item)
            order = (1, 2) if round_ % 2 == 0 else (2, 1)
            for processes in order:
                measured = drain(url, stats_url, n, sha_rounds, processes, variant)
                figures.setdefault((item, processes), []).append(measured)
    return figures


def main() -> int:
    global PEERS
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--work", default="0,250", help="SHA-256 rounds per job, or noop; comma-separated"
    )
    parser.add_argument("--peers-dir", type=Path, help="the shared peers folder (for benchlib)")
    parser.add_argument(
        "--redis-url", help="use this db of a server we started (it is FLUSHed) instead of one"
    )
    parser.add_argument("--stats-url", help="with --redis-url: the accounting db")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.peers_dir:
        PEERS = args.peers_dir.resolve()
    if not (PEERS / "benchlib.py").is_file():
        raise SystemExit(f"no benchlib.py in {PEERS} (the shared peers folder)")
    works = [w.strip() for w in args.work.split(",") if w.strip()]
    for item in works:
        if item != "noop" and not item.isdigit():
            raise SystemExit(f"--work: {item!r} is neither a number of rounds nor noop")
    if args.redis_url:
        if not args.stats_url:
            raise SystemExit("--redis-url needs --stats-url")
        figures = measure(args.redis_url, args.stats_url, args.n, args.rounds, works)
    else:
        with private_redis((REPO / ".bench/processes").resolve(), None) as port:
            url, stats_url = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/15"
            figures = measure(url, stats_url, args.n, args.rounds, works)
    rows = summarize(works, figures)
    print_table(rows, args.n, args.rounds)
    if args.json:
        out = {
            "n": args.n,
            "rounds": args.rounds,
            "loadavg_end": os.getloadavg(),
            "drains": {f"{w}/{p}": [asdict(d) for d in ds] for (w, p), ds in figures.items()},
            "rows": rows,
        }
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
