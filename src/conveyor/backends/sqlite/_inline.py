"""Inserts written on the caller's own thread: a single enqueue on the event loop's thread when
that costs the loop no wait (:class:`InlineInserter`), and ``SyncQueue``'s inserts on the plain
thread that calls it (:class:`ThreadInserter`).

``await queue.enqueue`` of one job is one ``INSERT`` (see :func:`._insert.insert_alone`). Handing
it to the driver's thread and back costs more than the statement itself: two thread switches
and the future's wake-up, ~45 µs of CPU per job against ~70 µs for everything else (measured
with 20,000 single enqueues). So the loop's thread writes it itself, on a connection of its
own that never waits:

* its busy timeout is 0: when another connection holds the write lock, the statement fails at
  once with "database is locked" and the job goes to the driver's thread, which waits in
  SQLite's busy handler as before;
* it never checkpoints (``wal_autocheckpoint = 0``), so a commit never copies the WAL into the
  file and waits for the disk while the loop waits; every :data:`THREAD_EVERY`-th single insert
  takes the driver's thread instead, whose commit checkpoints as usual once the WAL holds 1,000
  pages, which bounds the WAL this connection grows. (A checkpoint run beside the inserts
  would not: the WAL starts over only when a writer finds every frame copied, which a steady
  stream of inserts never lets happen.)
* only at ``synchronous=NORMAL`` (the default), where a WAL commit does not fsync: at ``full``
  every commit waits for the disk, and the loop would wait with it.

Anything else this writer does not expect (an error of any kind, a duplicate id, a call from
another thread or a forked child) returns None, and the caller writes the job the usual way,
which reports what it finds; a failed single statement wrote nothing.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Final, Protocol

from conveyor.backends.sqlite._connection import CALLER_WAITS, Connection, in_short_waits
from conveyor.backends.sqlite._insert import can_insert_alone, insert_alone, write_all
from conveyor.drivers.common import check_new_jobs, check_now, resolve_now
from conveyor.drivers.records import InsertResult, NewJob

# One single insert in this many goes through the driver's thread (see the module docstring):
# a single insert appends ~8 pages to the WAL, and the automatic checkpoint starts at 1,000.
THREAD_EVERY: Final = 64


class Taken(enum.Enum):
    """What :meth:`InlineInserter.insert` returns for a job whose id is in use: trying the one
    statement again elsewhere would find the same, so the caller writes the whole plan, which
    reports the duplicate with the existing job's state."""

    TAKEN = "taken"


TAKEN: Final = Taken.TAKEN


class InlineInserter:
    """Single inserts on the thread that first used it (the event loop's), never waiting."""

    def __init__(self, path: str, synchronous: str) -> None:
        self._path = path
        self.enabled = synchronous != "full"
        self._conn: sqlite3.Connection | None = None
        self._owner = (0, 0)  # (pid, thread id) of the thread that opened the connection
        self._count = 0

    def insert(self, new: NewJob, at: float) -> InsertResult | Taken | None:
        """Write ``new`` now and return its result; :data:`TAKEN` when its id is in use (the
        caller reports the duplicate); None when the caller is to write it."""
        if not self.enabled:
            return None
        self._count += 1
        if self._count % THREAD_EVERY == 0:
            return None
        conn = self._connection()
        if conn is None:
            return None
        try:
            written = insert_alone(conn, new, at)
        except sqlite3.Error:
            return None
        return TAKEN if written is None else written

    def _connection(self) -> sqlite3.Connection | None:
        here = (os.getpid(), threading.get_ident())
        if self._conn is not None and here == self._owner:
            return self._conn
        if self._conn is not None and here[0] == self._owner[0]:
            return None  # another thread of this process: the driver's thread serves it
        # No connection yet, or a forked child: SQLite must not use a parent's connection.
        self._conn = None
        try:
            conn = sqlite3.connect(
                self._path, timeout=0.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            return None
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error:
            conn.close()
            return None
        conn.row_factory = sqlite3.Row
        self._conn, self._owner = conn, here
        return conn

    def connection(self) -> sqlite3.Connection | None:
        """The connection this thread writes on (opened if need be), for a test to trace."""
        return self._connection()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._owner[0] == os.getpid():
            conn.close()


class _Registry(Protocol):
    """What an inserter shares with its driver: the queues known to be registered, the wake-up
    of this process's workers, and both after a committed insert."""

    known_queues: set[str]

    def notify(self, queue: str) -> None: ...

    def registered(self, jobs: Sequence[NewJob]) -> None: ...


class ThreadInserter:
    """The insert of ``SQLiteDriver.job_insert_many``, written by the calling thread on a
    connection of its own that waits for the write lock in SQLite's busy handler."""

    def __init__(self, db: Connection, driver: _Registry) -> None:
        self._db = db
        self._driver = driver

    def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        check_now(now)
        check_new_jobs(jobs)
        if not jobs:
            return []
        at = resolve_now(now)
        if can_insert_alone(jobs, self._driver.known_queues):
            alone = self._db.run_here(
                lambda conn: in_short_waits(
                    conn,
                    lambda c: insert_alone(c, jobs[0], at),
                    busy_timeout_ms=0,
                    pauses=CALLER_WAITS,
                )
            )
            if alone is not None:
                self._driver.notify(jobs[0].queue)
                return [alone]
        results = self._db.write_here(lambda conn: write_all(conn, jobs, at))
        self._driver.registered(jobs)
        return results

    def close(self) -> None:
        self._db.close_here()
