"""The contention scenario of `make bench-sqlite`, with the idle file beside the busy one.

The shared peers' sqlite_contention.py runs, per library, 4 producer processes that enqueue
single jobs as fast as they can while 2 worker processes drain the same file, and reports the
producers' latency, their combined rate, and every job accounted for (lost, ran twice). Issue
14's first target compares that p99 with the same producers' p99 on a file no worker serves, so
this script (which bench/run_sqlite.py runs instead of the shared one when it exists) adds that
pass: for each library, first the producers alone on a fresh file whose schema a worker made
and left, then the shared scenario on another fresh file. The results file is the shared
format with ``idle_enqueue_lat_ms`` and ``idle_enqueue_rate_total`` added per library.

    python sqlite_contention.py --dir DIR [--n 5000] [--producers 4] [--tag TAG]

Run in the peers copy (its runner and benchlib importable), with the environment the shared
script takes ($CONVEYOR_PY, $BENCH_REDIS_URL, $BENCH_STATS_URL, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import benchlib as B  # type: ignore[import-not-found]
import redis
import runner as R  # type: ignore[import-not-found]

SCHEMA_WAIT = 2.0  # seconds a worker gets to start and make the schema (the shared script's)


def libraries() -> dict[str, tuple[str, str, str]]:
    return {
        "conveyor-sqlite-2w": (os.environ.get("CONVEYOR_PY", ""), "peer_conveyor_sqlite", "2w"),
        "huey-sqlite-process": (R.PY_SQLITE, "peer_huey_sqlite", "process"),
    }


def start_workers(spec: tuple[str, str, str], log: Path) -> subprocess.Popen[bytes]:
    py, module, variant = spec
    info = R.call(py, module, variant, ["info"], timeout=120)
    with log.open("wb") as out:
        workers = subprocess.Popen(
            info["worker_argv"],
            cwd=R.HERE,
            env=R.env_for(variant, module),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    time.sleep(SCHEMA_WAIT)  # workers up, the schema made, before any producer starts
    return workers


def produce(spec: tuple[str, str, str], producers: int, n: int) -> dict[str, Any]:
    """Run the producers to the end; their latencies, errors and wall time."""
    py, module, variant = spec
    started = time.time()
    procs = [
        subprocess.Popen(
            [py, R.module_file(module), "contend", "--start", str(i * n), "--n", str(n)],
            cwd=R.HERE,
            env=R.env_for(variant, module),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(producers)
    ]
    lat: list[float] = []
    failed: set[int] = set()
    errors: dict[str, int] = {}
    retries = 0
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        lines = [x for x in out.splitlines() if x.startswith("BENCH_RESULT ")]
        if not lines:
            errors["producer crashed: " + err[-200:]] = 1
            continue
        result = json.loads(lines[-1][len("BENCH_RESULT ") :])
        failed.update(result["failed_ids"])
        retries += result["retries"]
        for key, count in result["errors"].items():
            errors[key] = errors.get(key, 0) + count
        lat.extend(result["lat_s"])
    lat.sort()
    return {
        "lat": lat,
        "failed": failed,
        "errors": errors,
        "retries": retries,
        "wall": time.time() - started,
    }


def latency_ms(lat: list[float]) -> dict[str, float] | None:
    if not lat:
        return None
    return {
        "n": len(lat),
        "p50": R.pct(lat, 0.5) * 1e3,
        "p99": R.pct(lat, 0.99) * 1e3,
        "p999": R.pct(lat, 0.999) * 1e3,
        "max": lat[-1] * 1e3,
    }


def fresh(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    R.sqlite_clear(str(folder))
    R.PEER_ENV.clear()
    R.PEER_ENV["BENCH_SQLITE_DIR"] = str(folder)
    return folder


def idle_pass(lid: str, spec: tuple[str, str, str], root: Path, logs: Path, a: Any) -> Any:
    """The producers alone on a file whose schema a worker made and then left."""
    fresh(root, lid + "-idle")
    R.stop_worker(start_workers(spec, logs / f"{lid}-idle-worker.log"))
    return produce(spec, a.producers, a.n)


def wait_for_drain(rs: redis.Redis, expected: int, workers: subprocess.Popen[bytes]) -> None:
    """Until every expected id ran, or nothing ran for 30 s, or the workers exited."""
    previous, changed = -1, time.time()
    while rs.scard(B.K_IDS) < expected:
        count = int(rs.get(B.K_COUNT) or 0)
        if count != previous:
            previous, changed = count, time.time()
        if time.time() - changed > 30 or workers.poll() is not None:
            return
        time.sleep(0.05)


def locked_or_busy(line: str) -> bool:
    return "locked" in line.lower() or "busy" in line.lower()


def busy_pass(
    lid: str, spec: tuple[str, str, str], root: Path, logs: Path, a: Any, rs: redis.Redis
) -> dict[str, Any]:
    """The shared scenario: the producers while the workers drain the same file."""
    folder = fresh(root, lid)
    rs.delete(*B.STATS_KEYS)
    log = logs / f"{lid}-worker.log"
    workers = start_workers(spec, log)
    started = time.time()
    made = produce(spec, a.producers, a.n)
    expected = set(range(a.producers * a.n)) - made["failed"]
    wait_for_drain(rs, len(expected), workers)
    all_done = time.time() - started
    time.sleep(1.0)  # a last execution's accounting lands
    ran = {int(x) for x in rs.smembers(B.K_IDS)}
    executions = int(rs.get(B.K_COUNT) or 0)
    R.stop_worker(workers)
    lines = log.read_text(errors="replace").splitlines()
    lat = made["lat"]
    return {
        "enqueued_ok": len(expected),
        "enqueue_failed_after_5_tries": len(made["failed"]),
        "producer_errors": made["errors"],
        "producer_retries": made["retries"],
        "executions": executions,
        "distinct_ids_run": len(ran),
        "lost": len(expected - ran),
        "lost_sample": sorted(expected - ran)[:20],
        "ran_but_not_enqueued_ok": len(ran - expected),
        "twice": executions - len(ran),
        "producers_wall_s": made["wall"],
        "all_done_wall_s": all_done,
        "enqueue_rate_total": len(lat) / made["wall"] if made["wall"] else None,
        "enqueue_lat_ms": latency_ms(lat),
        "worker_log_lines": len(lines),
        "worker_log_locked_or_busy": sum(1 for x in lines if locked_or_busy(x)),
        "worker_log_tail": lines[-5:],
        "sizes_after": R.sqlite_sizes(str(folder)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--n", type=int, default=5000, help="jobs per producer")
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--only", default="")
    ap.add_argument("--tag", default=time.strftime("sqlite-contention-%Y%m%d-%H%M%S"))
    a = ap.parse_args()
    rs = redis.Redis.from_url(B.STATS_URL)
    rs.ping()
    logs = Path(R.HERE) / "logs" / a.tag
    logs.mkdir(parents=True, exist_ok=True)
    root = Path(a.dir).resolve()
    only = {x for x in a.only.split(",") if x}
    out: dict[str, Any] = {
        "tag": a.tag,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "n_per_producer": a.n,
        "producers": a.producers,
        "loadavg_start": os.getloadavg(),
        "libs": [],
    }
    path = Path(R.HERE) / "results" / f"{a.tag}.json"
    for lid, spec in libraries().items():
        if only and lid not in only:
            continue
        res: dict[str, Any] = {"id": lid, "loadavg_before": os.getloadavg()}
        idle = idle_pass(lid, spec, root, logs, a)
        res["idle_enqueue_lat_ms"] = latency_ms(idle["lat"])
        res["idle_enqueue_rate_total"] = len(idle["lat"]) / idle["wall"] if idle["wall"] else None
        res["idle_producer_errors"] = idle["errors"]
        res.update(busy_pass(lid, spec, root, logs, a, rs))
        out["libs"].append(res)
        busy, quiet = res["enqueue_lat_ms"], res["idle_enqueue_lat_ms"]
        print(
            f"[{lid}] ok={res['enqueued_ok']} lost={res['lost']} twice={res['twice']} "
            f"errors={res['producer_errors']} p99 busy={busy and busy['p99']:.2f}ms "
            f"idle={quiet and quiet['p99']:.2f}ms all={res['all_done_wall_s']:.1f}s "
            f"worker-locked={res['worker_log_locked_or_busy']}",
            flush=True,
        )
        path.write_text(json.dumps(out, indent=1))
    out["loadavg_end"] = os.getloadavg()
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
