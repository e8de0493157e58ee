"""What only the PostgreSQL backend has: its URLs, migrations and schema, the query plans that
keep every operation independent of the backlog, rows written by something else, and the plan
that inserts jobs on a caller's own connection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conveyor import (
    BackendUnavailable,
    InvalidArgument,
    JobContext,
    JobState,
    MigrationRequired,
    Queue,
    UnsupportedURL,
    Worker,
    job,
)
from conveyor.backends.postgres import PostgresDriver
from conveyor.backends.postgres._sql import MIGRATIONS
from conveyor.backends.postgres._url import parse_url
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    InsertStatus,
    Lease,
    ListParams,
    NewJob,
    Retention,
    TransitionKind,
)
from conveyor.drivers.transactional import Row, Statement, run_plan
from tests.backends.postgres.schema_text import describe
from tests.conformance.worker.helpers import Num, fast_config, wait_state
from tests.conftest import drop_test_schema, postgres_test_url

REPO = Path(__file__).resolve().parents[3]


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


# -- URLs ----------------------------------------------------------------------------------


def test_conveyor_options_are_taken_out_and_the_password_is_hidden() -> None:
    parsed = parse_url("postgresql://app:s3cret@db:5433/shop?schema=jobs&sslmode=require")
    assert parsed.schema == "jobs"
    assert parsed.conninfo == "postgresql://app:s3cret@db:5433/shop?sslmode=require"
    assert "s3cret" not in parsed.shown
    assert parse_url("postgres://db/shop").schema == "public"


@pytest.mark.parametrize(
    "url",
    [
        'postgresql://db/shop?schema=jobs";drop',
        "postgresql://db/shop?schema=9jobs",
        "postgresql://db/shop?pool_max=0",
        "postgresql://db/shop?pool_max=many",
    ],
)
def test_a_bad_option_is_refused_with_a_clear_error(url: str) -> None:
    with pytest.raises(UnsupportedURL):
        parse_url(url)


# -- migrations and schema ---------------------------------------------------------------------


async def test_applying_every_migration_gives_schema_sql_exactly(pg: PostgresDriver) -> None:
    expected = (
        resources.files("conveyor.backends.postgres")
        .joinpath("schema.sql")
        .read_text(encoding="utf-8")
    )
    with _connect(pg.source_url) as conn:
        actual = describe(conn, parse_url(pg.source_url).schema)
    assert actual == expected, (
        "schema.sql is stale: regenerate it with "
        "`python -m tests.backends.postgres.schema_text <postgresql url>`"
    )


def test_four_processes_starting_on_an_empty_database_apply_each_migration_once(
    pg_url: str,
) -> None:
    command = [sys.executable, "-m", "conveyor", "--url", pg_url, "migrate"]
    processes = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    assert sum("applied: 0001_initial" in out for out in outputs) == 1, outputs
    schema = parse_url(pg_url).quoted_schema
    with _connect(pg_url) as conn:
        rows = conn.execute(f"SELECT name FROM {schema}.conveyor_migration".encode()).fetchall()
    assert sorted(r[0] for r in rows) == [name for name, _ in MIGRATIONS]


async def test_a_database_migrated_by_newer_code_is_refused(pg: PostgresDriver) -> None:
    schema = parse_url(pg.source_url).quoted_schema
    with _connect(pg.source_url) as conn:
        conn.execute(f"INSERT INTO {schema}.conveyor_migration VALUES ('9999_future', 0)".encode())
    for create in (True, False):
        later = PostgresDriver(pg.source_url)
        with pytest.raises(MigrationRequired, match="9999_future"):
            await later.open(create=create)


async def test_inspecting_a_schema_that_does_not_exist_creates_nothing(pg_url: str) -> None:
    driver = PostgresDriver(pg_url)
    with pytest.raises(BackendUnavailable, match="no Conveyor tables"):
        await driver.open(create=False)
    with _connect(pg_url) as conn:
        found = conn.execute(
            b"SELECT count(*) FROM pg_namespace WHERE nspname = %s", [parse_url(pg_url).schema]
        ).fetchone()
    assert found == (0,)


async def test_an_unreachable_server_is_reported_as_unavailable() -> None:
    driver = PostgresDriver("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1"):
        await driver.open()


# -- query plans -------------------------------------------------------------------------------


async def _plan(driver: PostgresDriver, query: str, args: dict[str, Any]) -> str:
    with _connect(driver.source_url) as conn:
        sql = b"EXPLAIN " + driver._q[query]  # pyright: ignore[reportPrivateUsage]
        return "\n".join(row[0] for row in conn.execute(sql, args).fetchall())


async def test_hot_queries_read_indexes_in_order_never_the_whole_table(
    pg: PostgresDriver,
) -> None:
    """With a backlog that makes a scan tempting, every operation a worker repeats reads an
    index range: fetch the ready index in run order under LIMIT (no sort of the backlog), the
    others the primary key, the active or list index."""
    for start in range(0, 6000, 1000):
        batch = [NewJob(f"j{i}", "default", "n", b"{}") for i in range(start, start + 1000)]
        await pg.job_insert_many(batch)
    await pg.job_insert_many(
        [NewJob(f"s{i}", "default", "n", b"{}", delay=3600) for i in range(500)]
    )
    leased = await pg.job_fetch(FetchParams(("default",), 200, "w", 30))
    done = [
        FinishJob(j.id, j.lease_token or "", TransitionKind.COMPLETE, b"1") for j in leased[:100]
    ]
    await pg.job_finish_many(done, retention=Retention())
    with _connect(pg.source_url) as conn:
        conn.execute(f"ANALYZE {parse_url(pg.source_url).quoted_schema}.conveyor_job".encode())
    held = leased[150]
    plans = {
        "job_fetch": {
            "now": None,
            "queues": ["default", "other"],
            "limit": 10,
            "lease_seconds": 30,
            "worker_id": "w",
            "receipt": "r",
            "probe": True,
        },
        "job_fetch__rate_limited": {
            "now": 1.7e9,
            "queues": ["default", "other"],
            "caps": [5, 10],
            "limit": 10,
            "lease_seconds": 30,
            "worker_id": "w",
            "receipt": "r",
            "probe": True,
        },
        "job_extend_leases": {
            "now": None,
            "lease_seconds": 30,
            "ids": [held.id],
            "tokens": [held.lease_token],
            "isolated": [False],
        },
        "job_finish_many": {
            "now": None,
            "channel": "c",
            "keep": 1000,
            "keep_errors": 20,
            "error_chars": 2000,
            "ids": [held.id],
            "tokens": [held.lease_token],
            "kinds": ["complete"],
            "results": [b"1"],
            "errors": [None],
            "cancel_errors": ["cancelled"],
            "delays": [0.0],
        },
        "job_expired": {"now": None, "limit": 10},
        "job_list": {
            "queue": None,
            "states": ["queued", "completed"],
            "name": None,
            "before_seq": 100,
            "limit": 20,
        },
        "job_get_many": {"ids": [held.id]},
        "job_rescue_many": {
            "now": None,
            "channel": "c",
            "keep_errors": 20,
            "error_chars": 2000,
            "ids": [held.id],
            "tokens": [held.lease_token],
            "kinds": ["requeue"],
            "stalls": [1],
            "errors": ["lost"],
            "cancel_errors": ["cancelled"],
        },
        "job_cancel_many": {"now": None, "ids": [held.id, "j5000"], "channel": "c"},
        "job_retry_many": {"now": None, "ids": [held.id, "j5000"], "channel": "c"},
        "job_delete_many": {"ids": [held.id, "j5000"]},
        "job_promote_due": {"now": None, "limit": 10, "channel": "c"},
        "job_insert_many": {
            "now": None,
            "instance": None,
            "channel": "c",
            "ids": ["j1", "new"],
            "queues": ["default", "default"],
            "names": ["n", "n"],
            "payloads": [b"{}", b"{}"],
            "priorities": [0, 0],
            "max_attempts": [3, 3],
            "run_ats": [None, None],
            "delays": [0.0, 0.0],
            "keep_completeds": [None, 60.0],
            "keep_faileds": [None, None],
            "headers": [None, '{"traceparent": "00-1"}'],
        },
        "job_progress_many": {
            "now": None,
            "ids": [held.id],
            "tokens": [held.lease_token],
            "fractions": [0.5],
            "messages": [None],
        },
        "job_prune_finished__expired": {"now": 2e9, "limit": 10},
        "job_prune_finished__trim_completed": {"keep": 10, "queues": None, "limit": 10},
        "job_prune_finished__completed": {"cutoff": 2e9, "limit": 10},
    }
    explained = {name: await _plan(pg, name, args) for name, args in plans.items()}
    for name, plan in explained.items():
        assert "Seq Scan on conveyor_job" not in plan, f"{name} scans the table:\n{plan}"
    fetch = explained["job_fetch"].splitlines()
    ready = next(i for i, line in enumerate(fetch) if "conveyor_job_ready_idx" in line)
    assert "Index Scan using conveyor_job_ready_idx" in fetch[ready], explained["job_fetch"]
    assert "LockRows" in fetch[ready - 1] and "Limit" in fetch[ready - 2], explained["job_fetch"]
    limited = explained["job_fetch__rate_limited"].splitlines()
    ready = next(i for i, line in enumerate(limited) if "conveyor_job_ready_idx" in line)
    assert "Index Scan using conveyor_job_ready_idx" in limited[ready], "\n".join(limited)
    assert "LockRows" in limited[ready - 1] and "Limit" in limited[ready - 2], "\n".join(limited)
    assert "conveyor_job_due_idx" in explained["job_fetch"]
    assert "conveyor_job_active_idx" in explained["job_expired"]
    assert "conveyor_job_list_idx" in explained["job_list"]
    assert "conveyor_job_expiry_idx" in explained["job_prune_finished__expired"]
    hot = (
        "job_extend_leases",
        "job_finish_many",
        "job_get_many",
        "job_rescue_many",
        "job_delete_many",
    )
    for name in (*hot, "job_progress_many"):
        assert "conveyor_job_pkey" in explained[name], explained[name]
        assert "conveyor_job_active_idx" not in explained[name], explained[name]


# -- rows written by something else --------------------------------------------------------------

count = job("test.count", Num, result=int)


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        (b"\xff\xfe not utf-8", "PayloadValidationError"),
        (b"{not json", "Invalid JSON"),
        (b'{"n": "seven"}', "n: Input should be a valid integer"),
    ],
)
async def test_a_corrupt_stored_payload_fails_only_its_job(
    pg_url: str, garbage: bytes, expected: str
) -> None:
    queue = Queue.from_url(pg_url)
    worker = Worker(queue, config=fast_config())
    seen: list[int] = []

    @worker.handles(count)
    async def handle(payload: Num, ctx: JobContext) -> int:
        seen.append(payload.n)
        return payload.n

    bad = await queue.enqueue(count, Num(n=1))
    with _connect(pg_url) as conn:
        conn.execute(
            f"UPDATE {parse_url(pg_url).quoted_schema}.conveyor_job SET payload = %s "
            "WHERE id = %s".encode(),
            [garbage, bad.id],
        )
    good = await queue.enqueue(count, Num(n=2))
    task = asyncio.create_task(worker.run())
    try:
        failed = await wait_state(queue, bad.id, JobState.FAILED)
        assert await good.result(timeout=10) == 2
    finally:
        worker.stop(grace=0)
        await asyncio.wait_for(task, 10)
        await queue.close()
    assert failed.attempt == 1
    assert failed.error is not None and expected in failed.error
    assert seen == [2]


async def test_a_corrupt_error_history_starts_afresh(pg: PostgresDriver) -> None:
    await pg.job_insert_many([NewJob("h", "default", "n", b"{}", max_attempts=3)])
    (leased,) = await pg.job_fetch(FetchParams(("default",), 1, "w", 30))
    with _connect(pg.source_url) as conn:
        conn.execute(
            f"UPDATE {parse_url(pg.source_url).quoted_schema}.conveyor_job "
            """SET errors = '{"an": "object"}' WHERE id = 'h'""".encode()
        )
    retry = FinishJob("h", leased.lease_token or "", TransitionKind.RETRY, error="boom")
    (result,) = await pg.job_finish_many([retry], retention=Retention())
    assert result.status.value == "ok"
    (record,) = await pg.job_get_many(["h"])
    assert record is not None and [e.error for e in record.errors] == ["boom"]


# -- the caller's own connection -------------------------------------------------------------------


def _run_on(conn: psycopg.Connection[Any], statement: Statement) -> list[Row]:
    cur = conn.execute(statement.sql.encode(), statement.params)
    return cur.fetchall() if cur.description is not None else []


async def test_a_plan_on_the_callers_connection_exists_only_if_it_commits(
    pg: PostgresDriver,
) -> None:
    conninfo = parse_url(pg.source_url).conninfo
    with psycopg.connect(conninfo) as conn:
        results = run_plan(
            pg.insert_plan([NewJob("kept", "default", "n", b"{}")]),
            lambda s: _run_on(conn, s),
        )
        assert [r.status for r in results] == [InsertStatus.INSERTED]
        assert await pg.job_get_many(["kept"]) == [None]  # not committed yet
        conn.commit()
        run_plan(
            pg.insert_plan([NewJob("gone", "default", "n", b"{}")]), lambda s: _run_on(conn, s)
        )
        conn.rollback()
    kept, gone = await pg.job_get_many(["kept", "gone"])
    assert kept is not None and kept.state is JobState.QUEUED and gone is None
    listed = await pg.job_list(ListParams())
    assert [job.id for job in listed] == ["kept"]


async def test_a_commit_wakes_a_listening_worker_and_a_rollback_does_not(
    pg: PostgresDriver,
) -> None:
    await pg.listen(["default"], 0.01)  # starts listening
    conninfo = parse_url(pg.source_url).conninfo
    with psycopg.connect(conninfo) as conn:
        run_plan(pg.insert_plan([NewJob("r", "default", "n", b"{}")]), lambda s: _run_on(conn, s))
        conn.rollback()
        started = asyncio.get_running_loop().time()
        await pg.listen(["default"], 0.5)
        assert asyncio.get_running_loop().time() - started >= 0.45
        listening = asyncio.create_task(pg.listen(["default"], 10))
        run_plan(pg.insert_plan([NewJob("c", "default", "n", b"{}")]), lambda s: _run_on(conn, s))
        conn.commit()
        await asyncio.wait_for(listening, 5)


async def test_a_job_committed_before_listening_began_wakes_a_listen_at_once(
    pg: PostgresDriver,
) -> None:
    """Whichever call starts the listening connection (a worker's cancel listener usually does,
    before its fetch loop first waits), a job committed before LISTEN ran was never announced:
    the first wait for work after listening began must find it, not wait for its timeout."""
    await pg.job_insert_many([NewJob("early", "default", "n", b"{}")])
    await pg.cancel_listen("worker-1", 0.01)  # starts listening, after the job's notification
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pg.listen(["default"], 10)
    assert loop.time() - started < 5
    # Answered once: with nothing new, the next wait lasts its timeout.
    started = loop.time()
    await pg.listen(["default"], 0.3)
    assert loop.time() - started >= 0.25


async def test_a_plan_refuses_a_connection_to_another_store(
    pg: PostgresDriver, postgres_base_url: str
) -> None:
    other = PostgresDriver(postgres_test_url(postgres_base_url))
    await other.open()
    try:
        conninfo = parse_url(other.source_url).conninfo
        with psycopg.connect(conninfo) as conn, pytest.raises(InvalidArgument, match="reach"):
            # The other schema's tables exist, but this store's instance id is not there.
            mine = parse_url(pg.source_url).quoted_schema
            theirs = parse_url(other.source_url).quoted_schema

            def on_other(statement: Statement) -> list[Row]:
                return _run_on(
                    conn, Statement(statement.sql.replace(mine, theirs), statement.params)
                )

            run_plan(pg.insert_plan([NewJob("x", "default", "n", b"{}")]), on_other)
    finally:
        await other.close()
        drop_test_schema(other.source_url)
    assert await pg.job_count_by_state() == dict.fromkeys(JobState, 0)


async def test_leases_and_cancels_are_fenced_per_token(pg: PostgresDriver) -> None:
    await pg.job_insert_many([NewJob("a", "default", "n", b"{}")])
    (leased,) = await pg.job_fetch(FetchParams(("default",), 1, "w", 30))
    token = leased.lease_token or ""
    result = await pg.job_extend_leases([Lease("a", "stale"), Lease("a", token)], 30)
    assert result.lost == ("a",)
