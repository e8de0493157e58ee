"""The execution ledger: a side SQLite database (WAL) with one row per handler execution event.

Handlers write ``start`` when they begin, ``end`` when they return normally, ``interrupted`` when
they are cancelled (shutdown, lost lease) and ``gave_up`` when the slow job's marker never came.
The path comes from ``$CONVEYOR_TEST_LEDGER``; the tests create the file before starting workers.
"""

from __future__ import annotations

import os
import time

from conveyor import JobContext
from tests.process.app.sidedb import SideDB

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

_db = SideDB(ENV, SCHEMA, synchronous="NORMAL", timeout=30.0)
create = _db.create


def record(event: str, ctx: JobContext) -> None:
    """Append one event for the job ``ctx`` describes; autocommit, so it is durable at once."""
    _db.append(
        "INSERT INTO execution (job_id, job_name, attempt, pid, event, at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (ctx.job_id, ctx.job_name, ctx.attempt, os.getpid(), event, time.time()),
    )
