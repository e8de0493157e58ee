"""The relay's loop against real servers: woken by NOTIFY on PostgreSQL, refused rows set aside,
a Redis outage ridden out, relays side by side, a graceful stop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis

from conveyor import Queue
from conveyor.drivers.records import NewJob
from conveyor.drivers.transactional import run_plan
from conveyor.outbox import Outbox, PostgresOutbox, Relay, SQLiteOutbox, outbox_for_url
from tests.conftest import redis_test_url
from tests.outbox.conftest import base_conninfo, psycopg_execute, sqlite_execute
from tests.servers.postgres_server import PostgresServer
from tests.servers.redis_server import RedisServer

T = TypeVar("T")


async def until(condition: Callable[[], Awaitable[T | None]], *, timeout: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


def job(job_id: str, **options: Any) -> NewJob:
    return NewJob(id=job_id, queue="relay", name="relay.job", payload=b'{"n":1}', **options)


@pytest.fixture(params=["sqlite", "postgres"])
def outbox(request: pytest.FixtureRequest) -> Outbox:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    box = outbox_for_url(request.getfixturevalue(name))
    box.ensure_schema()
    return box


def commit(box: Outbox, jobs: list[NewJob]) -> None:
    """Write ``jobs`` in a transaction of the application's own, and commit it."""
    if isinstance(box, SQLiteOutbox):
        conn = sqlite3.connect(box.path, timeout=10)
        with conn:
            run_plan(box.insert_plan(jobs), sqlite_execute(conn))
        conn.close()
        return
    assert isinstance(box, PostgresOutbox)
    with psycopg.connect(box.conninfo) as pg, pg.transaction():
        run_plan(box.insert_plan(jobs), psycopg_execute(pg))


def raw_insert(box: Outbox, values: dict[str, Any]) -> None:
    """A row as a foreign or broken producer might write it."""
    columns = ", ".join(values)
    if isinstance(box, SQLiteOutbox):
        conn = sqlite3.connect(box.path)
        with conn:
            marks = ", ".join(f":{k}" for k in values)
            conn.execute(f"INSERT INTO conveyor_outbox ({columns}) VALUES ({marks})", values)
        conn.close()
        return
    assert isinstance(box, PostgresOutbox)
    marks = ", ".join(f"%({k})s" for k in values)
    sql = f'INSERT INTO "{box.schema}".conveyor_outbox ({columns}) VALUES ({marks})'
    with psycopg.connect(box.conninfo) as pg:
        pg.execute(sql.encode(), values)


async def in_redis(url: str, ids: list[str]) -> bool:
    async with Queue.from_url(url) as queue:
        return all([await queue.get(i) is not None for i in ids])


async def test_postgres_notify_wakes_the_relay_at_commit(pg_url: str, redis_url: str) -> None:
    box = outbox_for_url(pg_url)
    box.ensure_schema()
    relay = Relay(box, redis_url, safety_poll=60.0)
    task = asyncio.create_task(relay.run())
    try:
        commit(box, [job("first")])
        await until(lambda: in_redis(redis_url, ["first"]), timeout=10, what="the first job")
        lags: list[float] = []
        for n in range(5):
            committed = time.monotonic()
            await asyncio.to_thread(commit, box, [job(f"woken-{n}")])
            # Far sooner than the safety poll: only the notification can have woken it.
            await until(lambda: in_redis(redis_url, [f"woken-{n}"]), timeout=5, what="a move")  # noqa: B023
            lags.append(time.monotonic() - committed)
        assert max(lags) < 5
        # The job is in Redis a moment before the relay has deleted its row and counted it.
        await until(lambda: asyncio.sleep(0, relay.stats.moved == 6), timeout=5, what="count")
        assert relay.stats.errors == 0
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)


async def test_refused_rows_are_set_aside_and_the_rest_flow(outbox: Outbox, redis_url: str) -> None:
    commit(outbox, [job("good-1")])
    row = {
        "id": "bad-priority",
        "queue": "relay",
        "name": "relay.job",
        "payload": b"{}",
        "priority": 5_000_000,
        "max_attempts": 3,
        "delay": 0.0,
        "created_at": time.time(),
    }
    raw_insert(outbox, row)
    commit(outbox, [job("corrupt"), job("good-2")])
    # A key Redis refuses to treat as the job: the script rejects the whole batch.
    prefix = redis_url.rpartition("prefix=")[2]
    client = redis.Redis.from_url(redis_url.partition("?")[0])
    client.set("{" + prefix + ":relay}:j:corrupt", "not a hash")
    client.close()

    relay = Relay(outbox, redis_url)
    report = await relay.run_once()
    assert (report.rows, report.moved, report.set_aside) == (4, 2, 2)
    assert "priority" in str(report.refused) and "not a job hash" in str(report.refused)
    assert await in_redis(redis_url, ["good-1", "good-2"])
    commit(outbox, [job("good-3")])
    after = await relay.run_once()
    assert (after.rows, after.moved) == (1, 1), "set-aside rows no longer block or repeat"
    status = await relay.status()
    assert (status.waiting, status.set_aside) == (0, 2)
    await relay.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    # Durable, as the README asks of production servers: what was written survives the stop.
    with RedisServer(appendonly=True) as server:
        yield server


async def test_the_relay_rides_out_a_redis_outage(
    sqlite_url: str, private_redis: RedisServer
) -> None:
    url = redis_test_url(private_redis.url)
    box = outbox_for_url(sqlite_url)
    box.ensure_schema()
    relay = Relay(box, url)
    task = asyncio.create_task(relay.run())
    try:
        commit(box, [job("before")])
        await until(lambda: in_redis(url, ["before"]), timeout=10, what="the first move")
        await asyncio.to_thread(private_redis.stop)
        commit(box, [job(f"during-{i}") for i in range(20)])
        await until(
            lambda: asyncio.sleep(0, relay.stats.errors >= 2), timeout=30, what="failed tries"
        )
        await asyncio.to_thread(private_redis.start)
        ids = [f"during-{i}" for i in range(20)]
        await until(lambda: in_redis(url, ids), timeout=30, what="the jobs after the outage")
        await until(lambda: asyncio.sleep(0, relay.stats.moved == 21), timeout=5, what="count")
        assert not task.done()
    finally:
        relay.stop()
        await asyncio.wait_for(task, 15)


async def test_postgres_relays_side_by_side_move_each_row_once(pg_url: str, redis_url: str) -> None:
    box = outbox_for_url(pg_url)
    box.ensure_schema()
    commit(box, [job(f"j-{i}") for i in range(2000)])
    relays = [Relay(box, redis_url, batch_size=50) for _ in range(3)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:

        async def drained() -> bool:
            return sum(r.stats.moved + r.stats.duplicates for r in relays) >= 2000

        await until(drained, timeout=30, what="the outbox to drain")
    finally:
        for r in relays:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert sum(r.stats.moved for r in relays) == 2000
    assert sum(r.stats.duplicates for r in relays) == 0, "SKIP LOCKED: no row taken twice"
    assert all(r.stats.moved > 0 for r in relays), "all three relays took rows"
    with psycopg.connect(base_conninfo(pg_url)) as conn:
        left = conn.execute(f'SELECT count(*) FROM "{box.schema}".conveyor_outbox').fetchone()
    assert left == (0,)


async def test_a_replay_is_a_duplicate_not_a_second_job(outbox: Outbox, redis_url: str) -> None:
    """What a relay killed between the insert and the delete sees when it starts again."""
    commit(outbox, [job("once"), job("twice")])
    async with Queue.from_url(redis_url) as queue:
        await queue.driver.job_insert_many([job("twice")])
        relay = Relay(outbox, redis_url)
        report = await relay.run_once()
        assert (report.moved, report.duplicates) == (1, 1)
        assert len(await queue.list_jobs(queue="relay")) == 2
        await relay.close()


async def test_delays_count_from_the_insert(outbox: Outbox, redis_url: str) -> None:
    at = time.time() + 7200
    commit(outbox, [job("delayed", delay=600.0), job("at", run_at=at), job("now")])
    relay = Relay(outbox, redis_url)
    await relay.run_once()
    await relay.close()
    async with Queue.from_url(redis_url) as queue:
        delayed, fixed, now = [await queue.get(i) for i in ("delayed", "at", "now")]
    assert delayed is not None and fixed is not None and now is not None
    assert abs(delayed.run_at.timestamp() - (time.time() + 600)) < 30
    assert abs(fixed.run_at.timestamp() - at) < 0.01
    assert now.state.value == "queued" and delayed.state.value == "scheduled"


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


async def test_the_relay_rides_out_a_postgres_restart(
    private_postgres: PostgresServer, redis_url: str
) -> None:
    """Both of the relay's connections (its batches' and the one that listens) come back, and
    a commit after the restart wakes it without waiting for the safety poll."""
    box = outbox_for_url(private_postgres.url)
    box.ensure_schema()
    relay = Relay(box, redis_url, safety_poll=60.0)
    task = asyncio.create_task(relay.run())
    try:
        commit(box, [job("before")])
        await until(lambda: asyncio.sleep(0, relay.stats.moved == 1), timeout=10, what="a move")
        await asyncio.to_thread(private_postgres.stop)
        await until(lambda: asyncio.sleep(0, relay.stats.errors >= 1), timeout=30, what="errors")
        await asyncio.to_thread(private_postgres.start)
        await asyncio.to_thread(commit, box, [job("after")])
        await until(lambda: asyncio.sleep(0, relay.stats.moved == 2), timeout=30, what="again")
        # It listens again (a take listens first): the next commit wakes it at once.
        await asyncio.to_thread(commit, box, [job("woken")])
        await until(lambda: asyncio.sleep(0, relay.stats.moved == 3), timeout=5, what="a wake")
        assert not task.done()
    finally:
        relay.stop()
        await asyncio.wait_for(task, 15)


async def test_a_relay_started_before_its_database_waits_for_it(
    tmp_path: Path, redis_url: str
) -> None:
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder / 'app.db'}"
    relay = Relay(url, redis_url)
    task = asyncio.create_task(relay.run())
    try:
        await until(lambda: asyncio.sleep(0, relay.stats.errors >= 2), timeout=10, what="tries")
        folder.mkdir()
        box = outbox_for_url(url)
        box.ensure_schema()
        commit(box, [job("late")])
        await until(lambda: asyncio.sleep(0, relay.stats.moved == 1), timeout=20, what="a move")
    finally:
        relay.stop()
        await asyncio.wait_for(task, 15)
