"""Producers and workers on one SQLite file, as real processes: every job runs, exactly once
unless the worker running it was killed, no producer sees the file locked, and a worker killed
with SIGKILL in the middle of its fetches and finishes leaves no job half written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conveyor.backends.sqlite import SQLiteDriver
from conveyor.drivers.records import FetchParams, NewJob
from tests.backends.sqlite import contention_app
from tests.process.harness import CONVEYOR, REPO, wait_for

PRODUCERS = 3
PER_PRODUCER = 300
JOBS = PRODUCERS * PER_PRODUCER
RANDOM_ID = re.compile(r"\b(job_id|id|token)=\S+")
LOCK_TROUBLE = re.compile(r"\b(locked|busy)\b|sqlite_busy", re.IGNORECASE)


def _ledger(path: Path) -> list[tuple[int, int, int]]:
    """(job number, pid, attempt) per execution, in the order written."""
    return [
        (int(n), int(pid), int(attempt))
        for n, pid, attempt in (line.split() for line in path.read_text().splitlines())
    ]


def _states(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db, timeout=30.0)
    try:
        rows = conn.execute("SELECT state, count(*) FROM conveyor_job GROUP BY state").fetchall()
        return {state: n for state, n in rows}
    finally:
        conn.close()


def test_producers_and_two_workers_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    url = f"sqlite:///{db}"
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_URL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env[contention_app.LEDGER] = str(ledger)
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def start_worker() -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker{len(logs)}.log"
        logs.append(log)
        with log.open("wb") as out:
            argv = [*CONVEYOR, "--url", url, "worker", f"{contention_app.__name__}:worker"]
            proc = subprocess.Popen(
                argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        started.append(proc)
        return proc

    try:
        doomed = start_worker()
        start_worker()
        wait_for(
            lambda: db.exists() and _registered(db) >= 2, timeout=30, what="two workers running"
        )
        producers = [
            subprocess.Popen(
                [sys.executable, "-m", contention_app.__name__, url, str(i * PER_PRODUCER),
                 str(PER_PRODUCER)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(PRODUCERS)
        ]  # fmt: skip
        started += producers
        # Kill one worker while it fetches and finishes under the producers' load.
        wait_for(lambda: len(_ledger(ledger)) >= JOBS // 6, timeout=60, what="a sixth to run")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        start_worker()  # the survivor rescues what the killed one held; this one helps drain
        errors: Counter[str] = Counter()
        for producer in producers:
            out, err = producer.communicate(timeout=120)
            assert producer.returncode == 0, err.decode(errors="replace")
            errors.update(json.loads(out.decode().strip().splitlines()[-1]))
        assert not errors, f"producers saw errors: {dict(errors)}"

        wait_for(
            lambda: len({n for n, _, _ in _ledger(ledger)}) >= JOBS,
            timeout=60,
            what=f"all {JOBS} jobs to run",
        )
        wait_for(
            lambda: _states(db) == {"completed": JOBS},
            timeout=30,
            what=f"every job completed (now {_states(db)})",
        )
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    runs = _ledger(ledger)
    assert {n for n, _, _ in runs} == set(range(JOBS))
    # A job ran twice only when the killed worker had it: its lease expired and it was rescued.
    by_job: dict[int, list[tuple[int, int]]] = {}
    for n, pid, attempt in runs:
        by_job.setdefault(n, []).append((pid, attempt))
    twice = {n: seen for n, seen in by_job.items() if len(seen) > 1}
    for n, seen in twice.items():
        assert len(seen) == 2 and seen[0][0] == doomed.pid, (n, seen)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # No job left half written: each completed one has its end and no lease.
        assert conn.execute(
            "SELECT count(*) FROM conveyor_job WHERE state = 'completed' AND (finished_at IS NULL"
            " OR lease_expires_at IS NOT NULL OR worker_id IS NOT NULL)"
        ).fetchone() == (0,)
    finally:
        conn.close()
    for log in logs:
        # Job ids are random letters and may spell either word: leave them out of the search.
        text = RANDOM_ID.sub("", log.read_text(errors="replace"))
        problems = [line for line in text.splitlines() if LOCK_TROUBLE.search(line)]
        assert not problems, problems[:20]


def _registered(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30.0)
    try:
        return int(conn.execute("SELECT count(*) FROM conveyor_worker").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is being made
        return 0
    finally:
        conn.close()


async def test_an_idle_fetch_does_not_take_the_write_lock(tmp_path: Path) -> None:
    """A worker polling a file with nothing to take reads, and never waits for the lock that
    producers need: here another connection holds it for the whole fetch."""
    db = tmp_path / "idle.db"
    driver = SQLiteDriver(f"sqlite:///{db}")
    await driver.open()
    try:
        # Nothing runnable: one job scheduled for later, so every index the probe reads exists.
        later = NewJob(id="later", queue="q", name="n", payload=b"{}", delay=3600)
        await driver.job_insert_many([later])
        holder = sqlite3.connect(db, isolation_level=None, timeout=0)
        holder.execute("BEGIN IMMEDIATE")
        try:
            fetched = await asyncio.wait_for(
                driver.job_fetch(FetchParams(("q",), 10, "w", 30.0)), timeout=5.0
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert fetched == []
    finally:
        await driver.close()
