"""The no-op drain on Redis, measured: the queue machinery alone, in one worker process.

Starts a private redis-server on a free port (never 6379), enqueues ``--jobs`` no-op jobs in
bulk, then drains them with one in-process worker (``--concurrency``, burst) and prints:

* drain/s (jobs over the worker's wall time, start to burst exit);
* worker CPU µs per job (``getrusage(RUSAGE_SELF)`` over the drain; the enqueue is not counted);
* Redis CPU µs per job (``INFO cpu`` before/after: used_cpu_sys + used_cpu_user);
* per script: calls and ``usec_per_call`` from ``INFO commandstats``, and its µs per job.

``--runs N`` repeats it on fresh queues and prints the medians; ``--prefetch`` sets
``WorkerConfig.prefetch`` (default ``auto``; ``0`` leases nothing ahead). ``--hold`` waits on stdin
after the enqueue, so a profiler can attach to this pid (``py-spy record --pid ...``).

    .venv/bin/python bench/noop_drain.py --jobs 20000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import redis
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers.redis_server import RedisServer

from conveyor import JobContext, Queue, Worker, WorkerConfig, _eventloop, job
from conveyor.backends.redis import _lua
from conveyor.runtime.prefetch import PrefetchSetting


class Noop(BaseModel):
    n: int = 0


noop = job("bench.noop", Noop, result=None, queue="drain")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu(me: psutil.Process, skip: int) -> float:
    total = 0.0
    for child in me.children():
        if child.pid != skip:
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                total += t.user + t.system
    return total


def _redis_cpu(r: redis.Redis) -> float:
    info: dict[str, Any] = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _by_script(r: redis.Redis) -> dict[str, tuple[int, float]]:
    """Calls and total µs of each script, from the slow log (every top-level command is logged:
    slowlog-log-slower-than 0); commandstats only has one line for all of EVALSHA."""
    names = {_lua.load(n).sha: n for n in _lua.script_names()}
    out: dict[str, tuple[int, float]] = {}
    for entry in r.slowlog_get(100_000):
        cmd = entry["command"].split()
        if cmd and cmd[0].lower() in (b"evalsha", b"evalsha_ro"):
            name = names.get(cmd[1].decode(), "?")
            calls, usec = out.get(name, (0, 0.0))
            out[name] = (calls + 1, usec + entry["duration"])
    return out


def _scripts(r: redis.Redis) -> dict[str, tuple[int, float]]:
    """evalsha/eval calls and total µs, from INFO commandstats."""
    stats: dict[str, Any] = r.info("commandstats")
    out = {}
    for key, value in stats.items():
        if key.startswith("cmdstat_"):
            out[key.removeprefix("cmdstat_")] = (int(value["calls"]), float(value["usec"]))
    return out


async def _one(
    url: str, r: redis.Redis, jobs: int, concurrency: int, hold: bool, prefetch: PrefetchSetting
) -> dict[str, Any]:
    r.flushall()
    queue = Queue.from_url(url)
    done = 0
    first = last = 0.0
    # CPU (worker, renewal process) at the first and the last handler call: per job in the
    # steady drain, without the worker's start (the renewal process's imports) and exit.
    cpu_first = cpu_last = (0.0, 0.0)

    async def handle(payload: Noop, ctx: JobContext) -> None:
        nonlocal done, first, last, cpu_first, cpu_last
        done += 1
        last = time.perf_counter()
        if not first:
            first = last
            cpu_first = (_cpu(), _children_cpu(me, redis_pid))
        elif done == jobs:
            cpu_last = (_cpu(), _children_cpu(me, redis_pid))

    async with queue:
        for start in range(0, jobs, 1000):
            await queue.enqueue_many(
                [noop.request(Noop(n=i)) for i in range(start, min(jobs, start + 1000))]
            )
    if hold:
        print(f"pid {os.getpid()}: enqueued {jobs}; press enter to drain", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    worker = Worker(
        Queue.from_url(url),
        concurrency=concurrency,
        config=WorkerConfig(burst=True, prefetch=prefetch),
    )
    worker.register(noop, handle)
    r.config_resetstat()
    r.slowlog_reset()
    me = psutil.Process()
    redis_pid = int(r.info("server")["process_id"])
    children: dict[int, float] = {}

    async def watch_children() -> None:
        # The lease renewal process's CPU counts as the worker's; read it until it exits. The
        # list of children is cheap to keep but costly to scan (all of /proc): twice a second.
        known: dict[int, psutil.Process] = {}
        tick = 0
        while True:
            if tick % 5 == 0:
                for child in me.children():
                    if child.pid != redis_pid:
                        known.setdefault(child.pid, child)
            tick += 1
            for pid, child in known.items():
                with contextlib.suppress(psutil.Error):
                    t = child.cpu_times()
                    children[pid] = t.user + t.system
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_children())
    rcpu0, cpu0, t0 = _redis_cpu(r), _cpu(), time.perf_counter()
    await worker.run()
    t1, cpu1, rcpu1 = time.perf_counter(), _cpu(), _redis_cpu(r)
    watcher.cancel()
    assert done == jobs, (done, jobs)
    scripts = {
        name: {"calls": calls, "usec_per_call": usec / calls, "us_per_job": usec / jobs}
        for name, (calls, usec) in _scripts(r).items()
    }
    per_script = {
        name: {"calls": calls, "usec_per_call": usec / calls, "us_per_job": usec / jobs}
        for name, (calls, usec) in _by_script(r).items()
    }
    return {
        # First to last handler call, as the shared benchmark counts; the worker's start (the
        # renewal process, connections) and its burst exit are outside it.
        "drain_per_s": (jobs - 1) / (last - first),
        "wall_per_s": jobs / (t1 - t0),
        "worker_us_per_job": (cpu1 - cpu0) / jobs * 1e6,
        "renewer_us_per_job": sum(children.values()) / jobs * 1e6,
        "steady_worker_us_per_job": (cpu_last[0] - cpu_first[0]) / (jobs - 1) * 1e6,
        "steady_renewer_us_per_job": (cpu_last[1] - cpu_first[1]) / (jobs - 1) * 1e6,
        "redis_us_per_job": (rcpu1 - rcpu0) / jobs * 1e6,
        "commands": scripts,
        "scripts": per_script,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hold", action="store_true")
    ap.add_argument(
        "--prefetch", default="auto", help="WorkerConfig.prefetch: 'auto' or a number (0: off)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    prefetch: PrefetchSetting = "auto" if args.prefetch == "auto" else int(args.prefetch)
    logging.basicConfig(level=logging.WARNING)
    results = []
    with RedisServer() as server:
        url = server.url
        r = redis.Redis.from_url(url)
        # Log every top-level command (the per-script split); the log is read after each run.
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 100_000)
        for i in range(args.runs):
            res = _eventloop.run(_one(url, r, args.jobs, args.concurrency, args.hold, prefetch))
            results.append(res)
            print(
                f"run {i + 1}: {res['drain_per_s']:,.0f} jobs/s ({res['wall_per_s']:,.0f}/s with "
                f"start and exit), worker {res['worker_us_per_job']:.1f} µs/job + renewal process "
                f"{res['renewer_us_per_job']:.1f}, redis {res['redis_us_per_job']:.1f} µs/job; "
                f"steady drain: worker {res['steady_worker_us_per_job']:.1f} + renewal process "
                f"{res['steady_renewer_us_per_job']:.1f} µs/job",
                flush=True,
            )
            rows = [*res["scripts"].items(), *res["commands"].items()]
            for name, c in sorted(rows, key=lambda kv: -kv[1]["us_per_job"]):
                if c["us_per_job"] >= 0.05:
                    print(
                        f"    {name:<12} {c['calls']:>7} calls {c['usec_per_call']:>9.1f} "
                        f"µs/call {c['us_per_job']:>6.2f} µs/job"
                    )
    med = {
        k: statistics.median(r[k] for r in results)
        for k in (
            "drain_per_s",
            "wall_per_s",
            "worker_us_per_job",
            "renewer_us_per_job",
            "redis_us_per_job",
            "steady_worker_us_per_job",
            "steady_renewer_us_per_job",
        )
    }
    print(
        f"median of {args.runs}: {med['drain_per_s']:,.0f} jobs/s ({med['wall_per_s']:,.0f}/s "
        f"with start and exit), worker {med['worker_us_per_job']:.1f} µs/job + renewal "
        f"process {med['renewer_us_per_job']:.1f}, redis {med['redis_us_per_job']:.1f} µs/job; "
        f"steady drain: worker {med['steady_worker_us_per_job']:.1f} + renewal process "
        f"{med['steady_renewer_us_per_job']:.1f} µs/job"
    )
    if args.json:
        print(json.dumps({"median": med, "runs": results}))


if __name__ == "__main__":
    main()
