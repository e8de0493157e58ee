"""The outbox plan on real connections (sqlite3, psycopg sync and async) inside the caller's
transaction, and the relay moving what committed to a real Redis, where a worker runs it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
from pydantic import BaseModel

from conveyor import InvalidArgument, JobContext, JobState, Queue, Worker, WorkerConfig, job
from conveyor.drivers.records import Dedup, DedupMode, InsertStatus, NewJob
from conveyor.drivers.transactional import TransactionalWriter, run_plan, run_plan_async
from conveyor.outbox import PostgresOutbox, Relay, SQLiteOutbox, outbox_for_url
from tests.outbox.conftest import (
    base_conninfo,
    psycopg_execute,
    psycopg_execute_async,
    sqlite_execute,
)


class Note(BaseModel):
    text: str


note = job("outbox.note", Note, result=str, queue="outbox")


def new_job(job_id: str, text: str = "hi", *, delay: float = 0.0) -> NewJob:
    payload = Note(text=text).model_dump_json().encode()
    return NewJob(id=job_id, queue="outbox", name=note.name, payload=payload, delay=delay)


async def run_worker(redis_url: str) -> list[str]:
    """Run a burst worker on the Redis queue; returns the texts it handled."""
    seen: list[str] = []
    queue = Queue.from_url(redis_url)
    worker = Worker(queue, config=WorkerConfig(burst=True, poll_interval=0.05))

    @worker.handles(note)
    async def handle(payload: Note, ctx: JobContext) -> str:
        seen.append(payload.text)
        return payload.text.upper()

    await worker.run()
    await queue.close()
    return seen


def test_outbox_for_url() -> None:
    pg = outbox_for_url("postgresql://u:secret@db.example:6543/app?schema=jobs&sslmode=require")
    assert isinstance(pg, PostgresOutbox) and isinstance(pg, TransactionalWriter)
    assert pg.dialect == "postgresql"
    assert (pg.schema, pg.database) == ("jobs", "app")
    assert "secret" not in pg.url and "schema" not in pg.conninfo and "sslmode" in pg.conninfo
    lite = outbox_for_url("sqlite:///app.db")
    assert isinstance(lite, SQLiteOutbox) and lite.dialect == "sqlite"
    with pytest.raises(ValueError, match="schema"):
        outbox_for_url("postgresql://h/app?schema=bad-name")
    with pytest.raises(ValueError, match="outbox URL"):
        outbox_for_url("redis://localhost")


def test_invalid_jobs_are_refused_before_any_statement(sqlite_url: str) -> None:
    box = outbox_for_url(sqlite_url)
    with pytest.raises(InvalidArgument, match="queue"):
        box.insert_plan([NewJob(id="x", queue="bad queue", name="n", payload=b"{}")])
    with pytest.raises(InvalidArgument, match="priority"):
        box.insert_plan([NewJob(id="x", queue="q", name="n", payload=b"{}", priority=10**9)])


@pytest.mark.parametrize("url", ["sqlite:///app.db", "postgresql://db.example/app"])
def test_dedup_is_refused_before_any_statement(url: str) -> None:
    # The outbox's rows carry no key, and a key can only be decided where the job is inserted.
    keyed = NewJob(
        id="x", queue="q", name="n", payload=b"{}", dedup=Dedup(DedupMode.THROTTLE, "k", 60)
    )
    with pytest.raises(InvalidArgument, match="dedup= cannot be written through the outbox"):
        outbox_for_url(url).insert_plan([new_job("fine"), keyed])


async def test_sqlite_commit_reaches_redis_and_runs_rollback_never(
    sqlite_url: str, redis_url: str
) -> None:
    box = outbox_for_url(sqlite_url)
    box.ensure_schema()
    box.ensure_schema()  # idempotent
    assert isinstance(box, SQLiteOutbox)
    conn = sqlite3.connect(box.path, isolation_level=None)
    conn.execute("CREATE TABLE invite (email TEXT)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO invite VALUES ('ada@example.com')")
    jobs = [new_job("kept-1", "ada"), new_job("kept-2", "bob"), new_job("kept-1", "again")]
    results = run_plan(box.insert_plan(jobs), sqlite_execute(conn))
    assert [(r.id, r.status, r.state) for r in results] == [
        ("kept-1", InsertStatus.INSERTED, JobState.QUEUED),
        ("kept-2", InsertStatus.INSERTED, JobState.QUEUED),
        ("kept-1", InsertStatus.DUPLICATE, JobState.QUEUED),
    ]
    conn.execute("COMMIT")
    conn.execute("BEGIN")
    run_plan(box.insert_plan([new_job("dropped")]), sqlite_execute(conn))
    conn.execute("ROLLBACK")

    relay = Relay(box, redis_url)
    report = await relay.run_once()
    assert (report.rows, report.moved, report.duplicates, report.set_aside) == (2, 2, 0, 0)
    assert report.lag_ms is not None and report.lag_ms >= 0
    assert (await relay.run_once()).rows == 0
    assert conn.execute("SELECT count(*) FROM conveyor_outbox").fetchone() == (0,)
    await relay.close()

    async with Queue.from_url(redis_url) as queue:
        info = await queue.get("kept-1")
        assert info is not None and info.name == note.name and info.queue == "outbox"
        assert info.payload_json == b'{"text":"ada"}'
        assert await queue.get("dropped") is None
    assert sorted(await run_worker(redis_url)) == ["ada", "bob"]
    conn.close()


def test_sqlite_plan_checks_the_connection_reaches_the_outbox(
    sqlite_url: str, tmp_path: Path
) -> None:
    box = outbox_for_url(sqlite_url)
    other = sqlite3.connect(tmp_path / "other.db", isolation_level=None)
    with pytest.raises(InvalidArgument, match="not to the outbox's database"):
        run_plan(box.insert_plan([new_job("a")]), sqlite_execute(other))
    assert isinstance(box, SQLiteOutbox)
    same = sqlite3.connect(box.path, isolation_level=None)
    with pytest.raises(InvalidArgument, match="no outbox table"):
        run_plan(box.insert_plan([new_job("a")]), sqlite_execute(same))
    box.ensure_schema()
    run_plan(box.insert_plan([new_job("a")]), sqlite_execute(same))
    other.close()
    same.close()


def test_sqlite_batches_beyond_one_statement(sqlite_url: str) -> None:
    box = outbox_for_url(sqlite_url)
    box.ensure_schema()
    assert isinstance(box, SQLiteOutbox)
    conn = sqlite3.connect(box.path)  # the module's own transaction handling
    with conn:
        run_plan(box.insert_plan([new_job(f"b-{i}") for i in range(250)]), sqlite_execute(conn))
    rows = conn.execute("SELECT id FROM conveyor_outbox ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [f"b-{i}" for i in range(250)]
    conn.close()


async def test_postgres_sync_commit_reaches_redis_and_runs_rollback_never(
    pg_url: str, redis_url: str
) -> None:
    box = outbox_for_url(pg_url)
    box.ensure_schema()
    box.ensure_schema()
    with psycopg.connect(base_conninfo(pg_url)) as conn:
        with conn.transaction():
            results = run_plan(
                box.insert_plan([new_job("pg-1", "ada"), new_job("pg-2", "bob", delay=3600.0)]),
                psycopg_execute(conn),
            )
        assert [r.state for r in results] == [JobState.QUEUED, JobState.SCHEDULED]
        with pytest.raises(RuntimeError), conn.transaction():
            run_plan(box.insert_plan([new_job("pg-dropped")]), psycopg_execute(conn))
            raise RuntimeError("the application changed its mind")

    relay = Relay(box, redis_url)
    report = await relay.run_once()
    assert (report.rows, report.moved) == (2, 2)
    await relay.close()
    async with Queue.from_url(redis_url) as queue:
        assert await queue.get("pg-dropped") is None
        later = await queue.get("pg-2")
        assert later is not None and later.state is JobState.SCHEDULED
        # The delay counts from the insert into the outbox, not from the move.
        assert abs(later.run_at.timestamp() - (time.time() + 3600)) < 60
    assert await run_worker(redis_url) == ["ada"]


async def test_postgres_async_commit_reaches_redis(pg_url: str, redis_url: str) -> None:
    box = outbox_for_url(pg_url)
    box.ensure_schema()
    conn = await psycopg.AsyncConnection.connect(base_conninfo(pg_url))
    async with conn, conn.transaction():
        results = await run_plan_async(
            box.insert_plan([new_job(f"a-{i}", f"t{i}") for i in range(3)]),
            psycopg_execute_async(conn),
        )
        assert [r.status for r in results] == [InsertStatus.INSERTED] * 3
    relay = Relay(box, redis_url)
    assert (await relay.run_once()).moved == 3
    await relay.close()
    assert sorted(await run_worker(redis_url)) == ["t0", "t1", "t2"]


def test_postgres_plan_checks_the_database(pg_url: str) -> None:
    box = outbox_for_url(pg_url)
    box.ensure_schema()
    assert isinstance(box, PostgresOutbox)
    elsewhere = outbox_for_url(pg_url.replace("/postgres?", "/another_db?"))
    with psycopg.connect(base_conninfo(pg_url)) as conn:
        with pytest.raises(InvalidArgument, match="not to the outbox's database"):
            run_plan(elsewhere.insert_plan([new_job("x")]), psycopg_execute(conn))
        conn.rollback()
        count = conn.execute(f'SELECT count(*) FROM "{box.schema}".conveyor_outbox').fetchone()
        assert count == (0,)
