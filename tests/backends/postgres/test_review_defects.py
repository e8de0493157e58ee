"""Defects of the PostgreSQL backend found in review, each pinned by a test."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from pydantic import BaseModel

from conveyor import BackendUnavailable, InvalidArgument, Queue, UnsupportedURL, job
from conveyor._building import check_job_id as _check_job_id
from conveyor._definition import check_queue_name
from conveyor.backends.postgres import PostgresDriver
from conveyor.backends.postgres._url import parse_url
from conveyor.backends.registry import driver_for_url
from conveyor.drivers.records import (
    ChangeStatus,
    FetchParams,
    FinishJob,
    InsertStatus,
    JobState,
    NewJob,
    RescueJob,
    Retention,
    TransitionKind,
    TransitionStatus,
)
from conveyor.engine import Engine
from tests.backends.postgres.cut_proxy import CutProxy
from tests.conftest import drop_test_schema, postgres_test_url
from tests.servers.postgres_server import PostgresServer


@pytest.fixture
def pg_url(postgres_base_url: str) -> Iterator[str]:
    url = postgres_test_url(postgres_base_url)
    yield url
    drop_test_schema(url)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Engine]:
    driver = Engine(PostgresDriver(pg_url))
    await driver.open()
    try:
        yield driver
    finally:
        await driver.close()


def _job(job_id: str, **changes: Any) -> NewJob:
    fields: dict[str, Any] = {"id": job_id, "queue": "q", "name": "n", "payload": b"{}"}
    fields.update(changes)
    return NewJob(**fields)


def _params(limit: int = 10) -> FetchParams:
    return FetchParams(("q",), limit, "w1", 30.0)


# -- fencing: one job twice in a batch ----------------------------------------------------------


async def test_a_stale_finish_beside_the_live_one_of_the_same_job_is_lease_lost(
    pg: Engine,
) -> None:
    """A batch can carry two attempts of one job (the first lost its lease, the job came back to
    this worker): the memory driver applies the live one and reports the stale one
    ``lease_lost``; PostgreSQL reports both ``ok``."""
    await pg.job_insert_many([_job("a")])
    (leased,) = await pg.job_fetch(_params())
    assert leased.lease_token is not None
    results = await pg.job_finish_many(
        [
            FinishJob("a", leased.lease_token, TransitionKind.COMPLETE, result=b"1"),
            FinishJob("a", "token-of-a-lost-attempt", TransitionKind.FAIL, error="boom"),
        ],
        retention=Retention(),
    )
    assert [r.status for r in results] == [TransitionStatus.OK, TransitionStatus.LEASE_LOST]


async def test_a_stale_rescue_beside_the_live_one_of_the_same_job_is_lease_lost(
    pg: Engine,
) -> None:
    await pg.job_insert_many([_job("a")], now=100.0)
    (leased,) = await pg.job_fetch(_params(), now=100.0)
    assert leased.lease_token is not None
    results = await pg.job_rescue_many(
        [
            RescueJob("a", leased.lease_token, TransitionKind.REQUEUE, 1, "lost"),
            RescueJob("a", "some-other-token", TransitionKind.FAIL, 1, "lost"),
        ],
        now=1000.0,
    )
    assert [r.status for r in results] == [TransitionStatus.OK, TransitionStatus.LEASE_LOST]


# -- a user's value fails only its own job: NUL characters ---------------------------------------


async def test_an_id_with_a_nul_is_not_found_and_the_rest_of_the_batch_is_applied(
    pg: Engine,
) -> None:
    """``queue.cancel([...])`` and ``queue.get(...)`` pass ids through unchecked; the memory,
    SQLite and Redis drivers answer ``not_found``, PostgreSQL fails the whole call with
    ``BackendError`` (CharacterNotInRepertoire), so the valid ids beside it are not cancelled."""
    await pg.job_insert_many([_job("a")])
    results = await pg.job_cancel_many(["bad\x00id", "a"])
    assert [r.status for r in results] == [ChangeStatus.NOT_FOUND, ChangeStatus.OK]
    assert await pg.job_get_many(["bad\x00id"]) == [None]


async def test_an_error_text_with_a_nul_fails_only_its_own_finish(pg: Engine) -> None:
    """The contract: a batch with an invalid finish is refused whole with InvalidArgument naming
    the job, before anything is written (the worker's completer then splits the batch, so only
    that job's finish is refused); before, one error text failed the statement as a
    BackendError with every job of the batch left active."""
    await pg.job_insert_many([_job("a"), _job("b")])
    leased = await pg.job_fetch(_params())
    finishes = [
        FinishJob(
            j.id, j.lease_token or "", TransitionKind.FAIL, error="x\x00y" if j.id == "a" else "e"
        )
        for j in leased
    ]
    with pytest.raises(InvalidArgument, match="'a'"):
        await pg.job_finish_many(finishes, retention=Retention())
    good = [f for f in finishes if f.job_id == "b"]
    (result,) = await pg.job_finish_many(good, retention=Retention())
    assert result.status is TransitionStatus.OK


# -- the retry loop of _with_connection repeats operations that are not idempotent ---------------


async def _behind_cut_proxy(base: str, trigger: bytes) -> tuple[CutProxy, str]:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    proxy = await CutProxy(parts.hostname, parts.port, trigger).start()
    user = parts.username or "postgres"
    url = f"postgresql://{user}@127.0.0.1:{proxy.listen_port}{parts.path}"
    return proxy, postgres_test_url(url)


async def test_a_fetch_whose_reply_is_lost_does_not_lease_jobs_nobody_holds(
    postgres_base_url: str,
) -> None:
    """The server commits the fetch, the connection drops before its reply arrives, and
    ``_with_connection`` runs the fetch again: the jobs of the first fetch stay ``active`` under
    tokens nobody has, until their lease runs out and they are rescued as stalls."""
    proxy, url = await _behind_cut_proxy(postgres_base_url, b"md5(random()")
    driver = Engine(driver_for_url(url))
    await driver.open()
    try:
        await driver.job_insert_many([_job(f"j{i}") for i in range(4)])
        proxy.armed = True
        fetched = await driver.job_fetch(_params(limit=2))
        assert proxy.cuts == 1
        records = await driver.job_get_many([f"j{i}" for i in range(4)])
        active = {r.id for r in records if r is not None and r.state is JobState.ACTIVE}
        assert active == {j.id for j in fetched}
    finally:
        await driver.close()
        drop_test_schema(f"{postgres_base_url}?{url.partition('?')[2]}")


async def test_an_insert_whose_reply_is_lost_is_not_reported_as_a_duplicate(
    postgres_base_url: str,
) -> None:
    """``enqueue`` hands back ``duplicate=True`` for the job it created itself."""
    proxy, url = await _behind_cut_proxy(postgres_base_url, b"ON CONFLICT (id) DO NOTHING")
    driver = Engine(driver_for_url(url))
    await driver.open()
    try:
        proxy.armed = True
        (result,) = await driver.job_insert_many([_job("new")])
        assert proxy.cuts == 1
        assert result.status is InsertStatus.INSERTED
    finally:
        await driver.close()
        drop_test_schema(f"{postgres_base_url}?{url.partition('?')[2]}")


async def test_a_cancel_whose_reply_is_lost_is_not_reported_wrong_state(
    postgres_base_url: str,
) -> None:
    proxy, url = await _behind_cut_proxy(postgres_base_url, b"'c:'")
    driver = Engine(driver_for_url(url))
    await driver.open()
    try:
        await driver.job_insert_many([_job("c")])
        proxy.armed = True
        (result,) = await driver.job_cancel_many(["c"])
        assert proxy.cuts == 1
        assert result.status is ChangeStatus.OK
    finally:
        await driver.close()
        drop_test_schema(f"{postgres_base_url}?{url.partition('?')[2]}")


async def test_a_server_that_is_down_is_reported_in_about_five_seconds() -> None:
    """README: "an operation whose connection fails is tried again on a new one for about
    5 s". With the server stopped, each try waits the pool's 5 s timeout, and PoolTimeout is
    retried like a broken connection: every operation blocks about 40 s."""
    with PostgresServer() as server:
        driver = Engine(driver_for_url(f"{server.url}?schema=down"))
        await driver.open()
        try:
            await driver.job_get_many(["x"])
            server.stop()
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await driver.job_get_many(["x"])
            assert time.monotonic() - started < 15.0
        finally:
            await driver.close()


# -- enqueue inside the caller's transaction -----------------------------------------------------


class _Payload(BaseModel):
    n: int = 0


_delayed = job("review.delayed", _Payload)


async def test_a_delay_in_the_callers_transaction_counts_from_the_enqueue(pg_url: str) -> None:
    """With ``now=None`` the statement uses ``now()``, which in the caller's transaction is
    when that transaction began: a delay of 1 s enqueued 2 s into a transaction is already
    over when the job is written (the memory driver and the outbox count from the enqueue;
    the outbox uses clock_timestamp())."""
    async with Queue.from_url(pg_url) as queue:
        conninfo = parse_url(pg_url).conninfo
        async with (
            await psycopg.AsyncConnection.connect(conninfo) as conn,
            conn.transaction(),
        ):
            await conn.execute("SELECT pg_sleep(2)")
            before = time.time()
            handle = await queue.enqueue(_delayed, _Payload(), delay=1.0, connection=conn)
        info = await queue.get(handle.id)
        assert info is not None
        assert info.run_at.timestamp() >= before + 0.9


# -- migrations ---------------------------------------------------------------------------------


async def test_a_role_without_ddl_rights_opens_a_schema_that_is_up_to_date(
    pg_url: str,
) -> None:
    """An application role with USAGE on the schema and DML on its tables (``conveyor migrate``
    run by the owner) must be able to start a worker, which opens with create=True: the
    migration step found nothing to do, yet ran CREATE SCHEMA IF NOT EXISTS, which needs
    CREATE on the database (InsufficientPrivilege)."""
    owner = PostgresDriver(pg_url)
    await owner.open()
    await owner.close()
    schema = parse_url(pg_url).schema
    role = f"app_{uuid.uuid4().hex[:8]}"
    base = parse_url(pg_url).conninfo
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        admin.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {role}'
        )
        admin.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {role}')
    try:
        parts = urlsplit(pg_url)
        app_url = pg_url.replace(f"{parts.username}@", f"{role}@", 1)
        app = Engine(driver_for_url(app_url))
        try:
            await app.open(create=True)
            (inserted,) = await app.job_insert_many([_job("by-app")])
            assert inserted.status is InsertStatus.INSERTED
        finally:
            await app.close()
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {role}')
            admin.execute(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "{schema}" FROM {role}')
            admin.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM {role}')
            admin.execute(f"DROP ROLE {role}")


# -- names: "$" matches before a trailing newline ------------------------------------------------


@pytest.mark.parametrize(
    "check",
    [
        lambda: parse_url("postgresql://h/db?schema=jobs%0A"),
        lambda: check_queue_name("default\n"),
        lambda: _check_job_id("abc\n"),
    ],
    ids=["schema", "queue", "job_id"],
)
def test_a_trailing_newline_is_refused(check: Any) -> None:
    """The checks promise letters, digits and '_' (no control characters for ids); a pattern
    ending in ``$`` also matched "name\\n", a queue other than "name"."""
    with pytest.raises((UnsupportedURL, InvalidArgument)):
        check()
