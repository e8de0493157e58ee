"""A single enqueue on SQLite is one INSERT statement (no BEGIN/COMMIT round, no counter or
queue-registration write), and everything a longer insert did still holds: duplicates by id and
by dedup key, sequence numbers never reused, the write lock waited for, and a file made before
migration 0010 upgraded."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.backends.sqlite import SQLiteDriver
from conveyor.backends.sqlite._sql import MIGRATIONS, QUERIES, split_statements
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    InsertResult,
    InsertStatus,
    JobState,
    NewJob,
    PurgeParams,
)

T0 = 1_700_000_000.0


def _job(
    job_id: str, *, queue: str = "q", dedup: Dedup | None = None, delay: float = 0.0
) -> NewJob:
    return NewJob(id=job_id, queue=queue, name="n", payload=b"{}", dedup=dedup, delay=delay)


async def _opened(path: Path) -> SQLiteDriver:
    driver = SQLiteDriver(f"sqlite:///{path}")
    await driver.open()
    return driver


def _statements(trace: list[str]) -> list[str]:
    """The traced statements, each once: sqlite3 reports a statement again for every trigger
    program it enters (even one whose WHEN is false), with the same text."""
    kept: list[str] = []
    for text in trace:
        if not kept or kept[-1] != text:
            kept.append(text)
    return [" ".join(text.split())[:24] for text in kept]


async def _traced(driver: SQLiteDriver, trace: list[str]) -> None:
    # The driver's connection lives on its own thread: set the callback there; a single insert
    # is tried first on this (the event loop's) thread, on a connection of its own.
    await driver._db.run(lambda conn: conn.set_trace_callback(trace.append))
    inline = driver._inline.connection()
    assert inline is not None
    inline.set_trace_callback(trace.append)


async def _seq(driver: SQLiteDriver, job_id: str) -> int:
    rows = await driver._db.run(
        lambda conn: conn.execute("SELECT seq FROM conveyor_job WHERE id = ?", (job_id,)).fetchall()
    )
    return int(rows[0][0])


async def test_a_single_enqueue_into_a_known_queue_is_one_insert(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    try:
        await driver.job_insert_many([_job("first")], now=T0)  # registers the queue
        trace: list[str] = []
        await _traced(driver, trace)
        for n in range(3):
            [result] = await driver.job_insert_many([_job(f"j{n}")], now=T0)
            assert result == InsertResult(f"j{n}", InsertStatus.INSERTED, JobState.QUEUED)
        [later] = await driver.job_insert_many([_job("later", delay=60)], now=T0)
        assert later.state is JobState.SCHEDULED
        assert _statements(trace) == ["INSERT INTO conveyor_job"] * 4
        seqs = [await _seq(driver, job_id) for job_id in ("first", "j0", "j1", "j2", "later")]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
    finally:
        await driver.close()


async def test_a_blocking_single_enqueue_is_one_insert(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    inserter = driver.blocking_inserter()
    try:
        await driver.job_insert_many([_job("first")], now=T0)
        trace: list[str] = []
        inserter._db.run_here(lambda conn: conn.set_trace_callback(trace.append))  # type: ignore[attr-defined]
        for n in range(3):
            [result] = await asyncio.to_thread(inserter.job_insert_many, [_job(f"j{n}")], now=T0)
            assert result.status is InsertStatus.INSERTED
        assert _statements(trace) == ["INSERT INTO conveyor_job"] * 3
    finally:
        inserter.close()
        await driver.close()


async def test_the_first_enqueue_into_a_queue_registers_it(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    try:
        await driver.job_insert_many([_job("a", queue="fresh")], now=T0)
        assert "fresh" in [queue.name for queue in await driver.queue_list()]
    finally:
        await driver.close()


async def test_a_duplicate_id_still_reports_the_existing_jobs_state(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    try:
        await driver.job_insert_many([_job("a"), _job("b")], now=T0)
        await driver.job_cancel_many(["b"], now=T0)
        trace: list[str] = []
        await _traced(driver, trace)
        [again] = await driver.job_insert_many([_job("a")], now=T0)
        assert again == InsertResult("a", InsertStatus.DUPLICATE, JobState.QUEUED)
        [cancelled] = await driver.job_insert_many([_job("b")], now=T0)
        assert cancelled == InsertResult("b", InsertStatus.DUPLICATE, JobState.CANCELLED)
        # The one-statement try, then the whole plan in one write transaction: bounded.
        assert len(_statements(trace)) <= 2 * 8
        counts = await driver.job_count_by_state("q")
        assert counts[JobState.QUEUED] == 1 and counts[JobState.CANCELLED] == 1
    finally:
        await driver.close()


async def test_a_dedup_key_still_dedups_a_single_enqueue(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    try:
        key = Dedup(DedupMode.UNTIL_STARTED, "report-7")
        await driver.job_insert_many([_job("warm")], now=T0)  # the queue is known
        [first] = await driver.job_insert_many([_job("a", dedup=key)], now=T0)
        [second] = await driver.job_insert_many([_job("b", dedup=key)], now=T0)
        assert first == InsertResult("a", InsertStatus.INSERTED, JobState.QUEUED)
        assert second == InsertResult("a", InsertStatus.DUPLICATE, JobState.QUEUED)
        assert await driver.job_get_many(["b"]) == [None]
    finally:
        await driver.close()


@pytest.mark.parametrize("purge_newest_by", ["single", "bulk", "retry"])
async def test_a_seq_is_never_handed_out_twice(tmp_path: Path, purge_newest_by: str) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    try:
        await driver.job_insert_many([_job("a"), _job("b")], now=T0)
        await driver.job_insert_many([_job("c")], now=T0)
        newest = await _seq(driver, "c")
        await driver.job_cancel_many(["b", "c"], now=T0)
        if purge_newest_by == "retry":
            await driver.job_retry_many(["b"], now=T0)  # b takes a new seq; c's is gone below
            newest = await _seq(driver, "b")
        await driver.job_purge(PurgeParams(states=(JobState.CANCELLED,)))
        if purge_newest_by == "bulk":
            await driver.job_insert_many([_job("d"), _job("e")], now=T0)
            assert await _seq(driver, "d") > newest
        else:
            await driver.job_insert_many([_job("d")], now=T0)
            assert await _seq(driver, "d") > newest
    finally:
        await driver.close()


async def test_a_single_enqueue_waits_for_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    driver = await _opened(path)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await driver.job_insert_many([_job("first")], now=T0)
        holder.execute("BEGIN IMMEDIATE")
        enqueue = asyncio.ensure_future(driver.job_insert_many([_job("waits")], now=T0))
        done, _ = await asyncio.wait([enqueue], timeout=0.3)
        assert not done  # in SQLite's busy handler, not failed with "database is locked"
        release = threading.Thread(target=lambda: holder.execute("COMMIT"))
        release.start()
        [result] = await asyncio.wait_for(enqueue, timeout=10)
        release.join()
        assert result.status is InsertStatus.INSERTED
    finally:
        holder.close()
        await driver.close()


def _file_before_0010(path: Path, fill: Callable[[sqlite3.Connection], None]) -> None:
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(QUERIES["migration__create_table"])
        for name, script in MIGRATIONS:
            if name >= "0010":
                break
            for statement in split_statements(script):
                conn.execute(statement)
            conn.execute(QUERIES["migration__record"], {"name": name, "now": 0})
        fill(conn)


async def test_a_file_made_before_0010_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE conveyor_sequence SET value = 41 WHERE name = 'job_seq'")
        conn.execute("INSERT INTO conveyor_queue (name, paused) VALUES ('q', 0)")
        for job_id, state, seq, lease in (("old", "queued", 7, None), ("run", "active", 41, 5.0)):
            conn.execute(
                "INSERT INTO conveyor_job (id, queue, name, payload, state, max_attempts, run_at,"
                " enqueued_at, seq, lease_token, lease_expires_at) VALUES"
                " (?, 'q', 'n', x'7b7d', ?, 3, 0, 0, ?, 't', ?)",
                (job_id, state, seq, lease),
            )

    _file_before_0010(path, fill)
    driver = await _opened(path)
    try:
        assert "0010_lean_insert" in [name for (name,) in _names(path)]
        with sqlite3.connect(path) as conn:
            index = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'conveyor_job_lease_idx'"
            ).fetchone()[0]
            assert "WHERE state = 'active'" in index
        [expired] = await driver.job_expired(limit=10, now=T0)
        assert expired.id == "run"
        await driver.job_insert_many([_job("warm")], now=T0)
        await driver.job_insert_many([_job("new")], now=T0)
        assert 41 < await _seq(driver, "warm") < await _seq(driver, "new")
    finally:
        await driver.close()


def _names(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name FROM conveyor_migration ORDER BY name").fetchall()
