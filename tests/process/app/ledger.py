"""The execution ledger: a side SQLite database (WAL) with one row per handler execution event.

Handlers write ``start`` when they begin, ``end`` when they return normally, ``interrupted`` when
they are cancelled (shutdown, lost lease) and ``gave_up`` when the slow job's marker never came.
The path comes from ``$CONVEYOR_TEST_LEDGER``; the tests create the file before starting workers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from conveyor import JobContext

ENV = "CONVEYOR_TEST_LEDGER"

SCHEMA = """
CREATE TABLE IF NOT EXISTS execution (
    rowid    INTEGER PRIMARY KEY,
    job_id   TEXT NOT NULL,
    job_name TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    pid      INTEGER NOT NULL,
    event    TEXT NOT NULL CHECK (event IN ('start', 'end', 'interrupted', 'gave_up')),
    at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS execution_job ON execution (job_id, event);
"""

_lock = threading.Lock()
_conn: sqlite3.Connection | None = None


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def create(path: str) -> None:
    """Create an empty ledger at ``path`` (called by the tests, before any worker starts)."""
    conn = connect(path)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()


def record(event: str, ctx: JobContext) -> None:
    """Append one event for the job ``ctx`` describes; autocommit, so it is durable at once."""
    global _conn
    with _lock:
        if _conn is None:
            _conn = connect(os.environ[ENV])
        _conn.execute(
            "INSERT INTO execution (job_id, job_name, attempt, pid, event, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (ctx.job_id, ctx.job_name, ctx.attempt, os.getpid(), event, time.time()),
        )
