"""Idle latency, Conveyor against huey in the same run: the shared runner's latency method
(500 jobs enqueued 5 ms apart onto an idle worker; handler start - enqueue timestamp, recorded
by the shared accounting call) on one private redis-server, the peers taking turns.

``python bench/idle_latency.py [rounds] [--huey PYTHON] [--before SRC]``. huey's interpreter
defaults to the peers' venv that ``make bench`` builds (.bench/peers/.venv); without one, only
Conveyor runs. ``--before``: the ``src`` folder of another checkout, run as one more contender
(its library, this checkout's bench scripts), to compare two versions in the same run.
Conveyor runs both with its asyncio producer and with ``SyncQueue`` (variant ``sync``). Prints
p50/p99 per round and the medians, and the load average (the reference machine is shared).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers.redis_server import RedisServer  # noqa: E402

PEERS = Path(os.environ.get("BENCH_PEERS_DIR", "/work/shared/bench/peers"))
N, INTERVAL_MS = 500, 5
LAT_KEY = "bench:lat"
STATS_KEYS = ("bench:count", "bench:first", "bench:last", LAT_KEY, "bench:ids")


def peer_env(url: str, variant: str, src: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "bench"), str(PEERS)]
    env.update(
        BENCH_REDIS_URL=f"{url}/0",
        BENCH_STATS_URL=f"{url}/15",
        BENCH_VARIANT=variant,
        PYTHONPATH=os.pathsep.join(paths if src is None else [src, *paths]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("BENCH_CONVEYOR_URL", None)
    return env


def module_file(module: str) -> str:
    local = ROOT / "bench" / f"{module}.py"
    return str(local if local.exists() else PEERS / f"{module}.py")


def worker_argv(python: str, module: str, env: dict[str, str]) -> list[str]:
    code = f"import json, {module} as m; print('ARGV', json.dumps(m.info()['worker_argv']))"
    out = subprocess.run(
        [python, "-c", code], cwd=PEERS, env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("ARGV "))
    import json

    argv: list[str] = json.loads(line[5:])
    return argv


def one_round(
    python: str, module: str, variant: str, url: str, logdir: str, src: str | None = None
) -> tuple[float, float]:
    env = peer_env(url, variant, src)
    stats = redis.Redis.from_url(f"{url}/15")
    queues = redis.Redis.from_url(f"{url}/0")
    queues.flushdb()
    stats.delete(*STATS_KEYS)
    argv = worker_argv(python, module, env)
    with open(Path(logdir) / f"{module}-{variant or 'default'}.log", "a") as log:
        worker = subprocess.Popen(
            argv, cwd=PEERS, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        # Warm up: one job run end to end before the timed ones, as the runner's drain does.
        warm = subprocess.run(
            [python, module_file(module), "latency", "--n", "1", "--interval-ms", "1"],
            cwd=PEERS, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if warm.returncode:
            raise RuntimeError(f"{module} warm-up failed: {warm.stderr[-800:]}")
        wait_for(lambda: stats.llen(LAT_KEY) >= 1, 30, f"{module}: the warm-up job never ran")
        stats.delete(*STATS_KEYS)
        time.sleep(0.5)  # idle, as in the runner
        sent = subprocess.run(
            [python, module_file(module), "latency", "--n", str(N),
             "--interval-ms", str(INTERVAL_MS)],
            cwd=PEERS, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if sent.returncode:
            raise RuntimeError(f"{module} producer failed: {sent.stderr[-800:]}")
        wait_for(lambda: stats.llen(LAT_KEY) >= N, 30, f"{module}: not every job ran")
        lats = sorted(float(x) * 1000 for x in stats.lrange(LAT_KEY, 0, -1))
    finally:
        stop(worker)
        stats.close()
        queues.close()
    return lats[int(0.5 * (len(lats) - 1))], lats[int(0.99 * (len(lats) - 1))]


def wait_for(condition: object, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.02)


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rounds", type=int, nargs="?", default=3)
    default_huey = ROOT / ".bench" / "peers" / ".venv" / "bin" / "python"
    parser.add_argument("--huey", default=str(default_huey))
    parser.add_argument("--before", default=None, help="src folder of another checkout")
    args = parser.parse_args()
    args.huey = os.path.abspath(args.huey)
    before = None if args.before is None else os.path.abspath(args.before)
    contenders: list[tuple[str, str, str, str, str | None]] = [
        ("conveyor", sys.executable, "peer_conveyor", "", None),
        ("conveyor sync", sys.executable, "peer_conveyor", "sync", None),
    ]
    if before is not None:
        contenders += [
            ("before: conveyor", sys.executable, "peer_conveyor", "", before),
            ("before: conveyor sync", sys.executable, "peer_conveyor", "sync", before),
        ]
    if Path(args.huey).exists():
        contenders.append(("huey -k process -w 2", args.huey, "peer_huey", "process", None))
    else:
        print(f"no huey interpreter at {args.huey}: Conveyor only", flush=True)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in contenders}
    with RedisServer() as server, tempfile.TemporaryDirectory() as logdir:
        url = server.url.rsplit("/", 1)[0]  # without its database: each role picks one
        for n in range(args.rounds):
            for name, python, module, variant, src in contenders:
                p50, p99 = one_round(python, module, variant, url, logdir, src)
                results[name].append((p50, p99))
                print(f"round {n + 1} {name:<24} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms", flush=True)
    print(f"load average {os.getloadavg()}")
    for name, rows in results.items():
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        print(f"{name:<24} median p50 {p50:6.3f} ms  p99 {p99:6.3f} ms")
    base = contenders[-1][0]
    if base.startswith("huey"):
        for name, rows in results.items():
            if name == base:
                continue
            r50 = [a[0] / b[0] for a, b in zip(rows, results[base], strict=True)]
            r99 = [a[1] / b[1] for a, b in zip(rows, results[base], strict=True)]
            print(
                f"{name} / huey, same rounds: p50 {statistics.median(r50):.2f}x  "
                f"p99 {statistics.median(r99):.2f}x"
            )


if __name__ == "__main__":
    main()
