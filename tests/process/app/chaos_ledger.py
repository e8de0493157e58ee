"""The chaos test's execution ledger: a side SQLite database (WAL, ``synchronous=FULL``).

Every execution of a handler gets a fresh ``run_id`` and writes two committed rows:

- ``start`` when the handler begins (before any work);
- ``effect`` when its work is done, just before it returns: the "side effect" whose count the
  checker compares with the queue's bookkeeping. It carries both start and end times.

Times are recorded twice: ``time.monotonic()`` (CLOCK_MONOTONIC, shared by all processes of the
machine, so comparable with the test's kill log) and ``time.time()`` for humans. The path comes
from ``$CONVEYOR_CHAOS_LEDGER``; the test creates the file before any worker starts.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass

from conveyor import JobContext
from tests.process.app.sidedb import SideDB

ENV = "CONVEYOR_CHAOS_LEDGER"

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    rowid      INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('start', 'effect')),
    mono_start REAL NOT NULL,
    wall_start REAL NOT NULL,
    mono_end   REAL,
    wall_end   REAL,
    UNIQUE (run_id, kind)
);
CREATE INDEX IF NOT EXISTS run_job ON run (job_id);
"""

COLUMNS = (
    "rowid",
    "run_id",
    "job_id",
    "attempt",
    "pid",
    "kind",
    "mono_start",
    "wall_start",
    "mono_end",
    "wall_end",
)

_db = SideDB(ENV, SCHEMA, synchronous="FULL", timeout=60.0)
create = _db.create


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    job_id: str
    attempt: int
    mono_start: float
    wall_start: float


def _insert(run: Run, kind: str, mono_end: float | None, wall_end: float | None) -> None:
    _db.append(
        "INSERT INTO run (run_id, job_id, attempt, pid, kind, mono_start, wall_start,"
        " mono_end, wall_end) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run.run_id,
            run.job_id,
            run.attempt,
            os.getpid(),
            kind,
            run.mono_start,
            run.wall_start,
            mono_end,
            wall_end,
        ),
    )


def begin(ctx: JobContext) -> Run:
    """Record (committed) that an execution of ``ctx``'s job starts; return its identity."""
    run = Run(uuid.uuid4().hex, ctx.job_id, ctx.attempt, time.monotonic(), time.time())
    _insert(run, "start", None, None)
    return run


def effect(run: Run) -> None:
    """Record (committed) the execution's effect: its work is done, the handler returns next."""
    _insert(run, "effect", time.monotonic(), time.time())


def read(path: str) -> list[dict[str, object]]:
    conn = sqlite3.connect(path, timeout=60.0)
    try:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM run ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]
