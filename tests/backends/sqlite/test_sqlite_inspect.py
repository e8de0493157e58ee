"""SQLite-only behaviour of job headers, the deletion of finished jobs and the per-minute
throughput counters: the migration, what is left in other tables, query plans, and the bounded
expiry of old buckets."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from conveyor.backends.sqlite import SQLiteDriver
from conveyor.backends.sqlite._inspect import EXPIRE_PER_ADD
from conveyor.backends.sqlite._inspect import Q as INSPECT_QUERIES
from conveyor.backends.sqlite._sql import MIGRATIONS, QUERIES, split_statements
from conveyor.core.headers import decode_headers, encode_headers
from conveyor.drivers.common import STATS_KEEP_MINUTES
from conveyor.drivers.records import (
    ChangeStatus,
    Dedup,
    DedupMode,
    FetchParams,
    FinishJob,
    JobGroup,
    NewJob,
    QueueStats,
    Retention,
    TransitionKind,
)
from conveyor.drivers.transactional import run_plan

T0 = 1_700_000_000.0
M0 = int(T0 // 60)
HEADERS = encode_headers({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
KEEP_ALL = Retention(completed_max_count=None, cancelled_max_age=None)


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


async def _opened(path: Path) -> SQLiteDriver:
    driver = SQLiteDriver(_url(path))
    await driver.open()
    return driver


def _job(job_id: str, **options: object) -> NewJob:
    return dataclasses.replace(
        NewJob(id=job_id, queue="q", name="test.job", payload=b"{}"),
        **options,  # type: ignore[arg-type]
    )


def _params(limit: int = 10) -> FetchParams:
    return FetchParams(("q",), limit, "worker-1", 30.0)


def _one(path: Path, sql: str, *args: object) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchone()[0]


# -- the migration ----------------------------------------------------------------------------


async def test_jobs_stored_before_headers_read_with_none(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(QUERIES["migration__create_table"])
        for name, script in MIGRATIONS:
            if name >= "0008":
                break
            for statement in split_statements(script):
                conn.execute(statement)
            conn.execute(QUERIES["migration__record"], {"name": name, "now": 0})
        conn.execute(
            "INSERT INTO conveyor_job (id, queue, name, payload, state, max_attempts, run_at,"
            " enqueued_at, seq) VALUES ('old', 'q', 'n', x'7b7d', 'queued', 3, 0, 0, 1)"
        )
    driver = await _opened(path)
    try:
        applied = await driver.migrate()
        assert applied == [name for name, _ in MIGRATIONS if name >= "0008"]
        [job] = await driver.job_fetch(_params(), now=T0)
        assert job.id == "old" and job.headers is None
        assert await driver.stats_read(None, since_minute=0) == []
    finally:
        await driver.close()


async def test_the_schema_has_the_headers_column_and_the_stats_table(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    await (await _opened(path)).close()
    with sqlite3.connect(path) as conn:
        columns = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(conveyor_job)")}
        assert columns["headers"] == "TEXT"
        stats = [row[1:3] for row in conn.execute("PRAGMA table_info(conveyor_stats)")]
        assert stats == [
            ("queue", "TEXT"),
            ("minute", "INTEGER"),
            ("completed", "INTEGER"),
            ("retried", "INTEGER"),
            ("failed", "INTEGER"),
        ]
        key = [
            row[2] for row in conn.execute("PRAGMA index_info(sqlite_autoindex_conveyor_stats_1)")
        ]
        assert key == ["queue", "minute"]
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "conveyor_stats_minute_idx" in names


# -- headers ----------------------------------------------------------------------------------


async def test_headers_written_on_the_callers_connection_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    driver = await _opened(path)
    try:
        plan = driver.insert_plan([_job("mine", headers=HEADERS)], now=T0)
        with sqlite3.connect(path, isolation_level=None) as conn:
            conn.execute("BEGIN IMMEDIATE")
            run_plan(plan, lambda s: conn.execute(s.sql, s.params).fetchall())
            conn.execute("COMMIT")
        [record] = await driver.job_get_many(["mine"])
        assert record is not None and record.headers == HEADERS
    finally:
        await driver.close()


async def test_headers_a_foreign_writer_stored_as_a_blob_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    driver = await _opened(path)
    try:
        await driver.job_insert_many([_job("a"), _job("b")], now=T0)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE conveyor_job SET headers = ? WHERE id = 'a'", (b'{"k":"v"}',))
            conn.execute("UPDATE conveyor_job SET headers = ? WHERE id = 'b'", (b"\xff{",))
        a, b = await driver.job_get_many(["a", "b"])
        assert a is not None and a.headers == '{"k":"v"}'
        assert b is not None and isinstance(b.headers, str)
        assert decode_headers(b.headers) == {}
    finally:
        await driver.close()


# -- job_delete_many --------------------------------------------------------------------------


async def test_a_deleted_job_leaves_no_dedup_record_and_its_group_counts_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    driver = await _opened(path)
    group = JobGroup("k", concurrency=2)
    try:
        await driver.job_insert_many(
            [
                _job("done", group=group, dedup=Dedup(DedupMode.UNTIL_FINISHED, "d")),
                _job("running", group=group),
                _job("waiting", group=group),
            ],
            now=T0,
        )
        done, running = await driver.job_fetch(_params(limit=2), now=T0)
        assert (done.id, running.id) == ("done", "running")
        [finished] = await driver.job_finish_many(
            [FinishJob(done.id, done.lease_token or "", TransitionKind.COMPLETE, result=b"1")],
            retention=KEEP_ALL,
            now=T0 + 1,
        )
        assert finished.status.value == "ok"
        counts = "SELECT queued, active FROM conveyor_group WHERE key = 'k'"
        with sqlite3.connect(path) as conn:
            before = conn.execute(counts).fetchone()
        assert before == (1, 1)
        assert _one(path, "SELECT count(*) FROM conveyor_dedup") == 1
        results = await driver.job_delete_many(["done", "running", "waiting"])
        assert [r.status for r in results] == [
            ChangeStatus.OK,
            ChangeStatus.WRONG_STATE,
            ChangeStatus.WRONG_STATE,
        ]
        assert _one(path, "SELECT count(*) FROM conveyor_dedup") == 0
        with sqlite3.connect(path) as conn:
            assert conn.execute(counts).fetchone() == before
        assert _one(path, "SELECT count(*) FROM conveyor_job") == 2
    finally:
        await driver.close()


# -- the throughput counters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "args", "index"),
    [
        (
            "stats_read",
            {"queue": "q", "since_minute": 0, "limit": STATS_KEEP_MINUTES},
            "sqlite_autoindex_conveyor_stats_1 (queue=? AND minute>?)",
        ),
        (
            "stats_add__expire",
            {"oldest": M0, "limit": 10},
            "conveyor_stats_minute_idx (minute<?)",
        ),
        ("stats_read__queues", {}, "sqlite_autoindex_conveyor_stats_1 (queue>?)"),
    ],
)
async def test_stats_statements_read_an_index_range(
    tmp_path: Path, query: str, args: dict[str, object], index: str
) -> None:
    path = tmp_path / "db.sqlite"
    await (await _opened(path)).close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + INSPECT_QUERIES[query], args).fetchall()
    plan = " ".join(str(row) for row in rows)
    assert index in plan, plan
    assert "SCAN conveyor_stats" not in plan and "TEMP B-TREE" not in plan, plan


def _put_buckets(path: Path, rows: list[tuple[str, int]]) -> None:
    """Buckets written straight into the table, as if from adds long ago."""
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO conveyor_stats (queue, minute, completed) VALUES (?, ?, 1)", rows
        )


async def test_each_add_deletes_a_bounded_number_of_expired_buckets(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    driver = await _opened(path)
    try:
        # Expired buckets of queues no worker reports on any more, more than one add deletes.
        expired = [(f"gone-{n % 7}", M0 - STATS_KEEP_MINUTES - 1 - n) for n in range(250)]
        _put_buckets(path, expired)
        sample = QueueStats("q", M0, completed=1)
        await driver.stats_add([sample], now=T0)
        left = _one(path, "SELECT count(*) FROM conveyor_stats WHERE queue LIKE 'gone-%'")
        assert left == 250 - (1 + EXPIRE_PER_ADD)
        # The oldest went first.
        newest_gone = max(minute for _, minute in expired)
        assert _one(path, "SELECT max(minute) FROM conveyor_stats WHERE queue != 'q'") == (
            newest_gone
        )
        await driver.stats_add([sample], now=T0)
        await driver.stats_add([sample], now=T0)
        assert await driver.stats_read(None, since_minute=0) == [QueueStats("q", M0, completed=3)]
        # A bucket exactly STATS_KEEP_MINUTES old stays.
        await driver.stats_add([QueueStats("q", M0 - STATS_KEEP_MINUTES, failed=1)], now=T0)
        assert len(await driver.stats_read(["q"], since_minute=0)) == 2
    finally:
        await driver.close()


async def test_a_read_returns_at_most_the_newest_keep_minutes_per_queue(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    driver = await _opened(path)
    try:
        extra = 40
        _put_buckets(
            path, [(q, M0 - n) for q in ("a", "b") for n in range(STATS_KEEP_MINUTES + extra)]
        )
        for queues in (None, ["b", "a", "b"]):
            read = await driver.stats_read(queues, since_minute=0)
            assert len(read) == 2 * STATS_KEEP_MINUTES
            assert read == sorted(read, key=lambda s: (s.queue, s.minute))
            assert {s.minute for s in read} == set(range(M0 - STATS_KEEP_MINUTES + 1, M0 + 1))
        assert len(await driver.stats_read(["a"], since_minute=M0 - 9)) == 10
    finally:
        await driver.close()
