"""Producers enqueueing one job per call while `conveyor worker` processes drain the same SQLite
file: what the producers wait for SQLite's write lock, and what each kind of write holds it for.
Conveyor alone, no Redis (`make bench-sqlite` runs the shared sqlite_contention.py beside huey).

    .venv/bin/python bench/sqlite_lock_contention.py --dir "$(mktemp -d)" [--producers 4] [--n 5000]
        [--workers 2] [--rounds 1]

Each round runs two scenarios on fresh files, idle first: the same producers on a file no
worker serves ("idle"), then with the workers draining it ("busy"), so the report's ratio
busy p99 / idle p99 comes from one run. Every handler appends its job's number to a ledger file
(O_APPEND, one line per execution), which proves each job ran exactly once; worker logs are
searched for "locked"/"busy". With $CONVEYOR_SQLITE_LOCK_STATS pointed at a directory by this
script, every process (producers and workers) reports how long each kind of write transaction
waited for the lock and then held it (see conveyor.backends.sqlite._lockstats).

This module is also the workers' app: `conveyor worker sqlite_lock_contention:worker`, with
$CONTENTION_LEDGER naming the ledger file. No Redis, no network: only the SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, job

BENCH = Path(__file__).resolve().parent
CONVEYOR = Path(sys.executable).with_name("conveyor")
LEDGER_ENV = "CONTENTION_LEDGER"
STATS_ENV = "CONVEYOR_SQLITE_LOCK_STATS"


class Mark(BaseModel):
    id: int


mark = job("bench.mark", Mark, result=None, queue="bench")
queue = Queue.from_url()
worker = Worker(queue, concurrency=100)
_ledger_fd: int | None = None


@worker.handles(mark)
async def handle_mark(payload: Mark, ctx: JobContext) -> None:
    global _ledger_fd
    if _ledger_fd is None:
        _ledger_fd = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    # One write() of one line with O_APPEND: lines of concurrent processes never interleave.
    os.write(_ledger_fd, f"{payload.id}\n".encode())


# -- producer ------------------------------------------------------------------------------------


async def produce(url: str, start: int, n: int) -> dict[str, Any]:
    q = Queue.from_url(url)
    await q.connect()
    lat: list[float] = []
    errors: dict[str, int] = {}
    try:
        for i in range(start, start + n):
            t = time.perf_counter()
            try:
                await q.enqueue(mark, Mark(id=i))
            except Exception as exc:  # counted: the report must show any error that reached us
                key = f"{type(exc).__name__}: {str(exc)[:100]}"
                errors[key] = errors.get(key, 0) + 1
            lat.append(time.perf_counter() - t)
    finally:
        await q.close()
    return {"lat": lat, "errors": errors}


# -- orchestration -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def scenario(root: Path, producers: int, n: int, workers: int) -> dict[str, Any]:
    root.mkdir(parents=True)
    db = root / "queue.db"
    url = f"sqlite:///{db}"
    ledger = root / "ledger.txt"
    ledger.touch()
    stats = root / "lockstats"
    stats.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")])
    env[LEDGER_ENV] = str(ledger)
    env[STATS_ENV] = str(stats)
    # The schema exists before anyone starts, so no producer times the migration.
    subprocess.run([sys.executable, __file__, "init", "--url", url], env=env, check=True)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    for i in range(workers):
        log = root / f"worker{i}.log"
        logs.append(log)
        with log.open("wb") as fh:
            argv = [str(CONVEYOR), "--url", url, "worker", "sqlite_lock_contention:worker",
                    "--log-level", "WARNING"]  # fmt: skip
            procs.append(
                subprocess.Popen(argv, cwd=BENCH, env=env, stdout=fh, stderr=subprocess.STDOUT)
            )
    try:
        deadline = time.monotonic() + 30
        while workers and _registered(db) < workers:
            if time.monotonic() > deadline:
                raise SystemExit("workers did not start:\n" + logs[0].read_text())
            time.sleep(0.05)
        cpu0 = os.times()
        t0 = time.perf_counter()
        outs = [root / f"producer{i}.json" for i in range(producers)]
        prods = [
            subprocess.Popen(
                [sys.executable, __file__, "produce", "--url", url, "--start", str(i * n),
                 "--n", str(n), "--out", str(outs[i])],
                env=env,
            )
            for i in range(producers)
        ]  # fmt: skip
        for p in prods:
            if p.wait(timeout=600) != 0:
                raise SystemExit(f"a producer exited with {p.returncode}")
        t_prod = time.perf_counter() - t0
        total = producers * n
        drained = None
        if workers:
            deadline = time.monotonic() + 120
            while _count_lines(ledger) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            drained = time.perf_counter() - t0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    cpu1 = os.times()
    lat: list[float] = []
    errors: dict[str, int] = {}
    for out in outs:
        data = json.loads(out.read_text())
        lat += data["lat"]
        for key, count in data["errors"].items():
            errors[key] = errors.get(key, 0) + count
    lat.sort()
    ran = [int(line) for line in ledger.read_text().split()]
    lock_lines = [
        line
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if "locked" in line.lower() or "busy" in line.lower()
    ]
    return {
        "jobs": total,
        "producers_s": t_prod,
        "rate": total / t_prod,
        "drained_s": drained,
        "p50": pct(lat, 0.5) * 1e3,
        "p99": pct(lat, 0.99) * 1e3,
        "p999": pct(lat, 0.999) * 1e3,
        "max": lat[-1] * 1e3,
        "errors": errors,
        "ran": len(ran),
        "distinct": len(set(ran)),
        "missing": total - len(set(ran)) if workers else None,
        "lock_lines": lock_lines[:5],
        "children_cpu_s": (cpu1.children_user + cpu1.children_system)
        - (cpu0.children_user + cpu0.children_system),
        "locks": _lock_stats(stats),
        "file_kib": db.stat().st_size // 1024,
    }


def _registered(db: Path) -> int:
    """Workers that have sent their first heartbeat (they register before they fetch)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM conveyor_worker").fetchone()[0])
    finally:
        conn.close()


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))


def _lock_stats(folder: Path) -> dict[str, dict[str, float]]:
    merged: dict[str, dict[str, list[float]]] = {}
    for f in folder.glob("*.json"):
        for kind, measures in json.loads(f.read_text()).items():
            into = merged.setdefault(kind, {"wait": [], "hold": []})
            into["wait"] += measures["wait"]
            into["hold"] += measures["hold"]
    summary: dict[str, dict[str, float]] = {}
    for kind, m in merged.items():
        hold, wait = sorted(m["hold"]), sorted(m["wait"])
        summary[kind] = {
            "n": len(hold),
            "hold_p50": pct(hold, 0.5) * 1e3,
            "hold_p99": pct(hold, 0.99) * 1e3,
            "hold_max": hold[-1] * 1e3,
            "hold_total": sum(hold) * 1e3,
            "wait_p99": pct(wait, 0.99) * 1e3,
        }
    return summary


def report(rounds: list[dict[str, dict[str, Any]]]) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    print(f"\n{len(rounds)} round(s), medians; load average now {os.getloadavg()}")
    print("scenario | enq/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | missing | lock lines")
    for name in ("idle", "busy"):
        last = rounds[-1][name]
        print(
            f"{name} | {med(name, 'rate'):,.0f} | {med(name, 'p50'):.2f} | {med(name, 'p99'):.2f}"
            f" | {med(name, 'p999'):.2f} | {med(name, 'max'):.1f} | {last['errors'] or 0}"
            f" | {last['missing']} | {len(last['lock_lines'])}"
        )
    ratios = [r["busy"]["p99"] / r["idle"]["p99"] for r in rounds]
    print(f"busy p99 / idle p99 (same round): {statistics.median(ratios):.2f}  {ratios}")
    rate = [r["busy"]["rate"] / r["idle"]["rate"] for r in rounds]
    print(f"busy rate / idle rate: {statistics.median(rate):.2f}")
    print("\nlock held by kind (busy scenario, last round), ms:")
    print("kind | n | hold p50 | hold p99 | hold max | hold total | wait p99")
    for kind, s in sorted(rounds[-1]["busy"]["locks"].items(), key=lambda kv: -kv[1]["hold_total"]):
        print(
            f"{kind} | {s['n']:.0f} | {s['hold_p50']:.3f} | {s['hold_p99']:.3f} | "
            f"{s['hold_max']:.2f} | {s['hold_total']:.0f} | {s['wait_p99']:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("produce")
    p.add_argument("--url", required=True)
    p.add_argument("--start", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    i = sub.add_parser("init")
    i.add_argument("--url", required=True)
    ap.add_argument("--dir")
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--n", type=int, default=5000, help="jobs per producer")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", help="write every round's figures here")
    a = ap.parse_args()
    if a.cmd == "produce":
        Path(a.out).write_text(json.dumps(asyncio.run(produce(a.url, a.start, a.n))))
        return
    if a.cmd == "init":
        asyncio.run(_init(a.url))
        return
    if not a.dir:
        ap.error("--dir is required")
    print(f"load average at start: {os.getloadavg()}")
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(a.rounds):
        base = Path(a.dir) / f"round{r}"
        done = {
            "idle": scenario(base / "idle", a.producers, a.n, 0),
            "busy": scenario(base / "busy", a.producers, a.n, a.workers),
        }
        rounds.append(done)
        b = done["busy"]
        print(
            f"round {r}: idle p99 {done['idle']['p99']:.2f} ms, busy p99 {b['p99']:.2f} ms, "
            f"busy rate {b['rate']:,.0f}/s, ran {b['ran']} distinct {b['distinct']}",
            flush=True,
        )
    report(rounds)
    if a.json:
        Path(a.json).write_text(json.dumps(rounds, indent=1))


async def _init(url: str) -> None:
    q = Queue.from_url(url)
    await q.connect()
    await q.close()


if __name__ == "__main__":
    main()
