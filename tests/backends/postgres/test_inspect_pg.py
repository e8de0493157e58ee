"""Headers, deletes of finished jobs and the throughput counters on PostgreSQL beyond what the
conformance suite sees: headers come back byte for byte on every insert path (a caller's
connection, groups, dedup keys, cron), a delete decides on the state it locked, the counters
add a batch that names a bucket twice, drop old buckets a bounded number per call, and every
statement reads an index."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from conveyor.backends.postgres import PostgresDriver
from conveyor.backends.postgres._inspect import STATS_DROP_LIMIT
from conveyor.backends.postgres._url import parse_url
from conveyor.drivers.common import STATS_KEEP_MINUTES, cron_job_id
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    CronFire,
    CronFireStatus,
    Dedup,
    DedupMode,
    FetchParams,
    FinishJob,
    JobGroup,
    JobState,
    NewJob,
    QueueStats,
    Retention,
    TransitionKind,
)
from conveyor.drivers.transactional import Row, Statement, run_plan
from tests.conftest import drop_test_schema, postgres_test_url

T0 = 1_700_000_000.0
M0 = int(T0 // 60)
Q = "default"
KEEP_ALL = Retention(completed_max_count=None)
# Not as json.dumps would write it: key order, spacing and escapes must all survive.
ODD = '{ "z":"1",\t"a" : "\\u00e9\\n",  "traceparent":"00-ab-cd-01" }'


@pytest.fixture
def pg_url(postgres_base_url: str) -> Iterator[str]:
    url = postgres_test_url(postgres_base_url)
    yield url
    drop_test_schema(url)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresDriver]:
    driver = PostgresDriver(pg_url)
    await driver.open()
    try:
        yield driver
    finally:
        await driver.close()


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(parse_url(url).conninfo, autocommit=True)


def _schema(url: str) -> str:
    return parse_url(url).quoted_schema


def _job(job_id: str, **options: Any) -> NewJob:
    return NewJob(job_id, Q, "n", b"{}", headers=ODD, **options)


async def _headers(pg: PostgresDriver, *ids: str) -> list[str | None]:
    return [None if r is None else r.headers for r in await pg.job_get_many(ids)]


# -- headers ----------------------------------------------------------------------------------


async def test_headers_come_back_byte_for_byte_on_every_insert_path(pg: PostgresDriver) -> None:
    await pg.job_insert_many([_job("one")], now=T0)  # the statement of a single job
    await pg.job_insert_many([_job("b1"), _job("b2"), NewJob("b3", Q, "n", b"{}")], now=T0)
    await pg.job_insert_many([_job("g1", group=JobGroup("k")), _job("g2")], now=T0)
    await pg.job_insert_many([_job("d1", dedup=Dedup(DedupMode.UNTIL_STARTED, "x"))], now=T0)
    tick = int(T0)
    fire = CronFire("every", tick, _job(cron_job_id("every", tick)))
    assert (await pg.cron_fire(fire, now=T0)).status is CronFireStatus.FIRED
    with psycopg.connect(parse_url(pg.source_url).conninfo) as conn:

        def on_caller(statement: Statement) -> list[Row]:
            cur = conn.execute(statement.sql.encode(), statement.params)
            return cur.fetchall() if cur.description is not None else []

        run_plan(pg.insert_plan([_job("t1"), _job("t2")], now=T0), on_caller)
        run_plan(pg.insert_plan([_job("t3", dedup=Dedup(DedupMode.UNTIL_STARTED, "y"))]), on_caller)
        conn.commit()
    ids = ["one", "b1", "b2", "g1", "g2", "d1", fire.job.id, "t1", "t2", "t3"]
    assert await _headers(pg, *ids) == [ODD] * len(ids)
    assert await _headers(pg, "b3") == [None]
    leased = await pg.job_fetch(FetchParams((Q,), 20, "w", 30), now=T0 + 1)
    assert {j.id: j.headers for j in leased} == {i: ODD for i in ids} | {"b3": None}


async def test_a_debounce_on_a_callers_connection_replaces_the_headers(
    pg: PostgresDriver,
) -> None:
    dedup = Dedup(DedupMode.DEBOUNCE, "k")
    await pg.job_insert_many([_job("first", dedup=dedup, delay=60)], now=T0)
    newer = dataclasses.replace(_job("second", dedup=dedup, delay=60), headers='{"b":"2"}')
    with psycopg.connect(parse_url(pg.source_url).conninfo) as conn:

        def on_caller(statement: Statement) -> list[Row]:
            cur = conn.execute(statement.sql.encode(), statement.params)
            return cur.fetchall() if cur.description is not None else []

        [result] = run_plan(pg.insert_plan([newer], now=T0 + 1), on_caller)
        conn.commit()
    assert result.id == "first"
    assert await _headers(pg, "first", "second") == ['{"b":"2"}', None]


# -- job_delete_many --------------------------------------------------------------------------


async def test_a_delete_decides_on_the_state_it_locked(pg: PostgresDriver, pg_url: str) -> None:
    """A job retried by a transaction that commits while the delete waits for its row is
    found queued and kept; the delete never acts on the state its snapshot saw."""
    await pg.job_insert_many([NewJob("a", Q, "n", b"{}"), NewJob("b", Q, "n", b"{}")], now=T0)
    leased = await pg.job_fetch(FetchParams((Q,), 2, "w", 30), now=T0)
    finishes = [
        FinishJob(j.id, j.lease_token or "", TransitionKind.FAIL, error="x") for j in leased
    ]
    await pg.job_finish_many(finishes, retention=KEEP_ALL, now=T0)
    schema = _schema(pg_url)
    with psycopg.connect(parse_url(pg_url).conninfo) as holder:
        holder.execute(  # a retry, not yet committed
            f"UPDATE {schema}.conveyor_job SET state = 'queued', finished_at = NULL "
            "WHERE id = 'a'".encode()
        )
        deleting = asyncio.create_task(pg.job_delete_many(["a", "b"]))
        await _until_waiting_for_a_lock(pg_url)
        holder.commit()
    assert await asyncio.wait_for(deleting, 10) == [
        ChangeResult("a", ChangeStatus.WRONG_STATE, JobState.QUEUED),
        ChangeResult("b", ChangeStatus.OK, None),
    ]
    assert [r is None for r in await pg.job_get_many(["a", "b"])] == [False, True]


async def test_deleting_finished_grouped_jobs_leaves_the_group_counts(
    pg: PostgresDriver, pg_url: str
) -> None:
    jobs = [NewJob(f"g{i}", Q, "n", b"{}", group=JobGroup("k", concurrency=2)) for i in range(4)]
    await pg.job_insert_many(jobs, now=T0)
    leased = await pg.job_fetch(FetchParams((Q,), 2, "w", 30), now=T0)
    done = [FinishJob(j.id, j.lease_token or "", TransitionKind.COMPLETE, b"1") for j in leased]
    await pg.job_finish_many(done, retention=KEEP_ALL, now=T0)
    statuses = [r.status for r in await pg.job_delete_many([j.id for j in leased])]
    assert statuses == [ChangeStatus.OK, ChangeStatus.OK]
    with _connect(pg_url) as conn:
        row = conn.execute(
            f"SELECT queued, active FROM {_schema(pg_url)}.conveyor_group".encode()
        ).fetchone()
    assert row == (2, 0)
    assert len(await pg.job_fetch(FetchParams((Q,), 5, "w", 30), now=T0 + 1)) == 2


async def test_ids_with_a_nul_are_refused_and_long_lists_are_one_statement(
    pg: PostgresDriver,
) -> None:
    ids = [f"j{i}" for i in range(2000)]
    await pg.job_insert_many([NewJob(i, Q, "n", b"{}") for i in ids], now=T0)
    results = await pg.job_delete_many([*ids, "missing"])
    assert {r.status for r in results[:-1]} == {ChangeStatus.WRONG_STATE}
    assert results[-1] == ChangeResult("missing", ChangeStatus.NOT_FOUND, None)


# -- stats --------------------------------------------------------------------------------------


async def test_a_batch_naming_a_bucket_twice_adds_both(pg: PostgresDriver) -> None:
    await pg.stats_add(
        [
            QueueStats("a", M0, completed=1),
            QueueStats("a", M0, completed=2, failed=1),
            QueueStats("a", M0, retried=5),
        ],
        now=T0,
    )
    await pg.stats_add([QueueStats("a", M0, completed=1), QueueStats("a", M0, completed=1)], now=T0)
    assert await pg.stats_read(["a", "a"], since_minute=M0) == [
        QueueStats("a", M0, completed=5, retried=5, failed=1)
    ]


async def test_the_server_clock_decides_what_is_old_when_now_is_not_given(
    pg: PostgresDriver,
) -> None:
    await pg.stats_add([QueueStats("a", M0, completed=1)], now=T0)
    await pg.stats_add([])  # the server's clock: years after T0
    assert await pg.stats_read(None, since_minute=0) == []


async def test_samples_already_too_old_are_not_kept(pg: PostgresDriver) -> None:
    await pg.stats_add(
        [QueueStats("a", M0 - STATS_KEEP_MINUTES - 1, completed=1), QueueStats("a", M0)],
        now=T0,
    )
    assert await pg.stats_read(None, since_minute=0) == [QueueStats("a", M0)]


async def test_old_buckets_go_a_bounded_number_per_add(pg: PostgresDriver, pg_url: str) -> None:
    old = 3 * STATS_DROP_LIMIT // 2
    with _connect(pg_url) as conn:  # buckets a worker wrote long ago, of a queue now gone
        conn.execute(
            f"INSERT INTO {_schema(pg_url)}.conveyor_stats (queue, minute, completed) "
            "SELECT 'gone', m, 1 FROM generate_series(1, %s) m".encode(),
            [old],
        )
    await pg.stats_add([], now=T0)
    assert len(await pg.stats_read(["gone"], since_minute=0)) == old - STATS_DROP_LIMIT
    await pg.stats_add([QueueStats("a", M0)], now=T0)
    assert await pg.stats_read(None, since_minute=0) == [QueueStats("a", M0)]


async def test_reads_are_bounded_per_queue_and_sorted_by_code_point(pg: PostgresDriver) -> None:
    names = ["b", "B", "é", "a", "Z"]
    for first in range(M0 - STATS_KEEP_MINUTES, M0 + 20, 100):
        minutes = range(first, min(first + 100, M0 + 20))
        await pg.stats_add([QueueStats(n, m, 1) for n in names for m in minutes], now=T0)
    read = await pg.stats_read(None, since_minute=0)
    assert [s.queue for s in read] == sorted(s.queue for s in read)
    per_queue = {n: [s.minute for s in read if s.queue == n] for n in names}
    newest = list(range(M0 + 20 - STATS_KEEP_MINUTES, M0 + 20))
    assert per_queue == {n: newest for n in names}
    since = await pg.stats_read(["é", "nobody", "a\x00"], since_minute=M0 + 10)
    assert since == [QueueStats("é", m, 1) for m in range(M0 + 10, M0 + 20)]


async def test_stats_statements_read_indexes(pg: PostgresDriver, pg_url: str) -> None:
    schema = _schema(pg_url)
    with _connect(pg_url) as conn:
        conn.execute(
            f"INSERT INTO {schema}.conveyor_stats (queue, minute, completed) "
            "SELECT 'q' || (i %% 100), %s - i / 100, 1 FROM generate_series(0, 17999) i".encode(),
            [M0],
        )
        conn.execute(f"ANALYZE {schema}.conveyor_stats".encode())
        plans = {
            "stats_read": {"queues": None, "since": M0 - 60, "keep": STATS_KEEP_MINUTES},
            "stats_add": {
                "now": T0,
                "keep": STATS_KEEP_MINUTES,
                "limit": STATS_DROP_LIMIT,
                "queues": ["q1", "q1"],
                "minutes": [M0, M0],
                "completed": [1, 2],
                "retried": [0, 0],
                "failed": [0, 0],
            },
        }
        for name, args in plans.items():
            sql = b"EXPLAIN " + pg._q[name]  # pyright: ignore[reportPrivateUsage]
            plan = "\n".join(row[0] for row in conn.execute(sql, args).fetchall())
            assert "Seq Scan on conveyor_stats" not in plan, f"{name} scans the table:\n{plan}"
            if name == "stats_add":
                assert "conveyor_stats_minute_idx" in plan, plan


# -- helpers ------------------------------------------------------------------------------------


async def _until_waiting_for_a_lock(url: str) -> None:
    """Until a statement on this test's schema waits for a lock (bounded: 10 s)."""
    with _connect(url) as conn:
        for _ in range(1000):
            row = conn.execute(
                b"SELECT count(*) FROM pg_stat_activity "
                b"WHERE wait_event_type = 'Lock' AND strpos(query, %s) > 0",
                [_schema(url)],
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the delete never waited for the row another transaction holds")
