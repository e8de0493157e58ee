"""A single insert that finds SQLite's write lock taken tries again after short pauses before it
waits in the busy handler (whose first steps are 1, 2 and 5 ms), on the driver's thread and on
a ``SyncQueue`` caller's thread alike; the busy timeout is set back afterwards whatever happens."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.sqlite import SQLiteDriver
from conveyor.backends.sqlite._connection import (
    BUSY_TIMEOUT_MS,
    SHORT_WAITS,
    in_short_waits,
    transaction,
    with_busy_timeout,
)
from conveyor.backends.sqlite._inline import ThreadInserter
from conveyor.drivers.records import InsertResult, InsertStatus, JobState, NewJob

T0 = 1_700_000_000.0


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


@contextmanager
def _table(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """A connection with table ``t``, and a second connection on the same file to hold locks."""
    path = tmp_path / "db.sqlite"
    conn, holder = _connect(path), _connect(path)
    conn.execute("CREATE TABLE t (x)")
    try:
        yield conn, holder
    finally:
        holder.close()
        conn.close()


def _busy_timeout(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA busy_timeout").fetchall()[0][0])


def test_a_taken_lock_is_tried_again_after_a_short_pause(tmp_path: Path) -> None:
    with _table(tmp_path) as (conn, holder):
        holder.execute("BEGIN IMMEDIATE")
        tries = 0

        def insert(c: sqlite3.Connection) -> int:
            nonlocal tries
            tries += 1
            if tries == 3:
                holder.execute("COMMIT")  # the third try finds the lock free
            return c.execute("INSERT INTO t VALUES (1)").rowcount

        assert in_short_waits(conn, insert) == 1
        assert tries == 3
        assert _busy_timeout(conn) == BUSY_TIMEOUT_MS
        assert conn.execute("SELECT count(*) FROM t").fetchall()[0][0] == 1


@pytest.mark.parametrize("kept", [BUSY_TIMEOUT_MS, 0])
def test_after_the_short_pauses_it_waits_in_the_busy_handler(tmp_path: Path, kept: int) -> None:
    with _table(tmp_path) as (conn, holder):
        conn.execute(f"PRAGMA busy_timeout = {kept}")
        holder.execute("BEGIN IMMEDIATE")
        tries = 0
        release = threading.Timer(0.05, lambda: holder.execute("COMMIT"))

        def insert(c: sqlite3.Connection) -> int:
            nonlocal tries
            tries += 1
            if tries == len(SHORT_WAITS) + 1:
                # The last try: the busy timeout is back, so this one waits for the commit.
                assert _busy_timeout(c) == BUSY_TIMEOUT_MS
                release.start()
            return c.execute("INSERT INTO t VALUES (1)").rowcount

        try:
            assert in_short_waits(conn, insert, busy_timeout_ms=kept) == 1
        finally:
            release.join()
        assert tries == len(SHORT_WAITS) + 1
        assert _busy_timeout(conn) == kept


def test_another_error_is_raised_at_once_and_the_busy_timeout_restored(tmp_path: Path) -> None:
    with _table(tmp_path) as (conn, _):
        tries = 0

        def insert(c: sqlite3.Connection) -> int:
            nonlocal tries
            tries += 1
            return c.execute("INSERT INTO missing VALUES (1)").rowcount

        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            in_short_waits(conn, insert)
        assert tries == 1
        assert _busy_timeout(conn) == BUSY_TIMEOUT_MS


def _job(job_id: str) -> NewJob:
    return NewJob(id=job_id, queue="q", name="n", payload=b"{}")


def _inserts_traced(conn: sqlite3.Connection, seen: list[str]) -> None:
    conn.set_trace_callback(lambda sql: seen.append(sql) if "INSERT" in sql else None)


@asynccontextmanager
async def _driver_and_holder(
    tmp_path: Path,
) -> AsyncIterator[tuple[SQLiteDriver, sqlite3.Connection]]:
    """An open driver whose queue "q" is known, and a connection to hold the write lock."""
    path = tmp_path / "db.sqlite"
    driver = SQLiteDriver(f"sqlite:///{path}")
    await driver.open()
    holder = _connect(path)
    try:
        await driver.job_insert_many([_job("first")], now=T0)
        yield driver, holder
    finally:
        holder.close()
        await driver.close()


async def _tried_again_then_written(
    enqueue: asyncio.Future[list[InsertResult]], tries: list[str], holder: sqlite3.Connection
) -> list[InsertResult]:
    """While ``holder`` keeps the lock, ``enqueue`` tries its insert three times (one try in
    the busy handler would be one statement traced, however long it waits) and is not done;
    then the lock is released and its results returned."""
    for _ in range(500):
        if len(tries) >= 3 or enqueue.done():
            break
        await asyncio.sleep(0.01)
    assert not enqueue.done()
    assert len(tries) >= 3, tries
    await asyncio.to_thread(holder.execute, "COMMIT")
    return await asyncio.wait_for(enqueue, 10)


async def test_the_drivers_thread_tries_a_single_insert_again_while_the_lock_is_held(
    tmp_path: Path,
) -> None:
    async with _driver_and_holder(tmp_path) as (driver, holder):
        tries: list[str] = []
        await driver._db.run(lambda conn: _inserts_traced(conn, tries))
        holder.execute("BEGIN IMMEDIATE")
        enqueue = asyncio.ensure_future(driver.job_insert_many([_job("a")], now=T0))
        [result] = await _tried_again_then_written(enqueue, tries, holder)
        assert result.status is InsertStatus.INSERTED
        assert await driver._db.run(_busy_timeout) == BUSY_TIMEOUT_MS
        [job] = await driver.job_get_many(["a"])
        assert job is not None and job.state is JobState.QUEUED


async def test_a_sync_callers_single_insert_is_tried_again_while_the_lock_is_held(
    tmp_path: Path,
) -> None:
    async with _driver_and_holder(tmp_path) as (driver, holder):
        inserter = driver.blocking_inserter()
        assert isinstance(inserter, ThreadInserter)
        try:
            inserter.job_insert_many([_job("warm")], now=T0)  # its connection is open
            tries: list[str] = []
            inserter._db.run_here(lambda conn: _inserts_traced(conn, tries))
            holder.execute("BEGIN IMMEDIATE")
            enqueue = asyncio.ensure_future(
                asyncio.to_thread(inserter.job_insert_many, [_job("a")], now=T0)
            )
            [result] = await _tried_again_then_written(enqueue, tries, holder)
            assert result.status is InsertStatus.INSERTED
            # Kept at 0 between calls: a single insert changes nothing before its first try.
            assert inserter._db.run_here(_busy_timeout) == 0
        finally:
            await asyncio.to_thread(inserter.close)


async def test_a_sync_callers_transaction_still_waits_in_the_busy_handler(tmp_path: Path) -> None:
    async with _driver_and_holder(tmp_path) as (driver, holder):
        inserter = driver.blocking_inserter()
        assert isinstance(inserter, ThreadInserter)
        try:
            inserter.job_insert_many([_job("warm")], now=T0)
            holder.execute("BEGIN IMMEDIATE")
            # Two jobs are one BEGIN IMMEDIATE transaction: it waits for the lock, not failing.
            enqueue = asyncio.ensure_future(
                asyncio.to_thread(inserter.job_insert_many, [_job("a"), _job("b")], now=T0)
            )
            done, _ = await asyncio.wait([enqueue], timeout=0.3)
            assert not done
            await asyncio.to_thread(holder.execute, "COMMIT")
            results = await asyncio.wait_for(enqueue, 10)
            assert [r.status for r in results] == [InsertStatus.INSERTED] * 2
            assert inserter._db.run_here(_busy_timeout) == 0
        finally:
            await asyncio.to_thread(inserter.close)


class _Interrupted(Exception):
    """Stands for what a signal handler raises the moment a statement returns."""


class _InterruptingConnection(sqlite3.Connection):
    """Raises :class:`_Interrupted` right after running the statement named ``after``."""

    after = ""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = super().execute(sql, *args)
        if self.after and sql == self.after:
            self.after = ""
            raise _Interrupted(sql)
        return cursor


def _interrupting(tmp_path: Path) -> _InterruptingConnection:
    conn = sqlite3.connect(
        tmp_path / "db.sqlite", isolation_level=None, factory=_InterruptingConnection
    )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    return conn


def test_an_exception_right_after_begin_leaves_no_transaction_open(tmp_path: Path) -> None:
    conn = _interrupting(tmp_path)
    try:
        conn.after = "BEGIN IMMEDIATE"
        with pytest.raises(_Interrupted):
            transaction(conn, lambda c: c.execute("INSERT INTO t VALUES (1)"))
        assert not conn.in_transaction  # the write lock is free for everyone else
    finally:
        conn.close()


@pytest.mark.parametrize("kept", [BUSY_TIMEOUT_MS, 0])
def test_an_exception_right_after_a_timeout_change_still_sets_it_back(
    tmp_path: Path, kept: int
) -> None:
    conn = _interrupting(tmp_path)
    holder = _connect(tmp_path / "db.sqlite")
    try:
        conn.execute(f"PRAGMA busy_timeout = {kept}")
        # The first change when the connection waits by default, the last one otherwise.
        conn.after = (
            "PRAGMA busy_timeout = 0" if kept else f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"
        )
        holder.execute("BEGIN IMMEDIATE")  # every try finds the lock taken
        with pytest.raises(_Interrupted):
            in_short_waits(
                conn, lambda c: c.execute("INSERT INTO t VALUES (1)"), busy_timeout_ms=kept
            )
        assert _busy_timeout(conn) == kept
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        conn.close()


def test_an_exception_right_after_raising_the_timeout_for_a_transaction_sets_it_back(
    tmp_path: Path,
) -> None:
    conn = _interrupting(tmp_path)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.after = f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"
        with pytest.raises(_Interrupted):
            with_busy_timeout(conn, lambda c: c.execute("INSERT INTO t VALUES (1)"))
        assert _busy_timeout(conn) == 0
    finally:
        conn.close()
