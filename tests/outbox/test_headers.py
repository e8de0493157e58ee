"""Job headers through the outbox: written into the row with the job, inside the application's
transaction, and passed on by the relay in the job it inserts; tables made before the column
existed are upgraded (their rows move as jobs without headers). Real SQLite files and a real
PostgreSQL server; the relay's target is Redis, a SQLite file or a memory store."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel, SecretStr

from conveyor import InvalidArgument, Queue, job
from conveyor.backends.redis import RedisDriver
from conveyor.core.headers import SECRETS_HEADER, decode_headers
from conveyor.core.secrets import secrets_header
from conveyor.drivers.records import InsertResult, NewJob
from conveyor.outbox import Outbox, PostgresOutbox, Relay, SQLiteOutbox, outbox_for_url


class Login(BaseModel):
    user: str
    password: SecretStr


login = job("outbox.login", Login, queue="outbox")
SECRET_HEADERS = secrets_header(Login)
SECRET = "open sesame"

# The outbox table as Conveyor made it before jobs had headers (and the index it had).
OLD_SQLITE_TABLE = """
CREATE TABLE conveyor_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL,
    queue        TEXT NOT NULL,
    name         TEXT NOT NULL,
    payload      BLOB NOT NULL,
    priority     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at       REAL,
    delay        REAL NOT NULL,
    created_at   REAL NOT NULL,
    failed_at    REAL,
    error        TEXT
)"""
OLD_SQLITE_INDEX = (
    "CREATE INDEX conveyor_outbox_pending_idx ON conveyor_outbox (seq) WHERE failed_at IS NULL"
)
OLD_POSTGRES_TABLE = """
CREATE TABLE {schema}.conveyor_outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL,
    queue        text NOT NULL,
    name         text NOT NULL,
    payload      bytea NOT NULL,
    priority     integer NOT NULL,
    max_attempts integer NOT NULL,
    run_at       double precision,
    delay        double precision NOT NULL,
    created_at   double precision NOT NULL,
    failed_at    double precision,
    error        text
)"""
OLD_POSTGRES_INDEX = (
    "CREATE INDEX conveyor_outbox_pending_idx ON {schema}.conveyor_outbox (seq) "
    "WHERE failed_at IS NULL"
)


# A table made by this version, and an old one once upgraded: headers last in both.
COLUMNS = [
    "seq",
    "id",
    "queue",
    "name",
    "payload",
    "priority",
    "max_attempts",
    "run_at",
    "delay",
    "created_at",
    "failed_at",
    "error",
    "headers",
]


@pytest.fixture(params=["sqlite", "postgres"])
def outbox_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(params=["redis", "sqlite", "memory"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the relay moves the jobs: the Redis it is made for (the producers' queue), or
    any other driver."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return f"memory://{uuid.uuid4().hex}"


def connect(box: Outbox) -> Any:
    """A blocking connection of the application's to the outbox's database (no transaction
    open: ``transaction`` opens one)."""
    if isinstance(box, SQLiteOutbox):
        return sqlite3.connect(box.path, isolation_level=None, timeout=10)
    assert isinstance(box, PostgresOutbox)
    return psycopg.connect(box.conninfo, autocommit=True)


def execute(box: Outbox, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own, committed; ``{schema}`` is the outbox's."""
    if isinstance(box, SQLiteOutbox):
        conn = sqlite3.connect(box.path, isolation_level=None, timeout=10)
        try:
            return conn.execute(sql.replace("{schema}.", ""), params).fetchall()
        finally:
            conn.close()
    assert isinstance(box, PostgresOutbox)
    text = sql.replace("{schema}", f'"{box.schema}"').replace("?", "%s")
    with psycopg.connect(box.conninfo, autocommit=True) as pg:
        cursor = pg.execute(text.encode(), params)
        return cursor.fetchall() if cursor.description else []


def outbox_rows(box: Outbox) -> list[tuple[str, str | None]]:
    return [
        (str(r[0]), r[1])
        for r in execute(box, "SELECT id, headers FROM {schema}.conveyor_outbox ORDER BY seq")
    ]


def outbox_columns(box: Outbox) -> list[str]:
    if isinstance(box, SQLiteOutbox):
        rows = execute(box, "SELECT name FROM pragma_table_info('conveyor_outbox')")
        return [str(r[0]) for r in rows]
    assert isinstance(box, PostgresOutbox)
    rows = execute(
        box,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
        "AND table_name = 'conveyor_outbox' ORDER BY ordinal_position",
        [box.schema],
    )
    return [str(r[0]) for r in rows]


async def enqueue(queue: Queue, box: Outbox, job_id: str, *, commit: bool = True) -> None:
    """Enqueue a job with a secret field with ``connection=``, in a transaction of the
    application's that also writes a row of its own; commit it or roll it back."""
    table = f'"{box.schema}".app_user' if isinstance(box, PostgresOutbox) else "app_user"
    conn = connect(box)
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (name TEXT)")
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES ('ada')")
        handle = await queue.enqueue(
            login, Login(user="ada", password=SecretStr(SECRET)), job_id=job_id, connection=conn
        )
        assert handle.id == job_id
        conn.execute("COMMIT" if commit else "ROLLBACK")
    finally:
        conn.close()


def make_old_table(box: Outbox, ids: Sequence[str]) -> None:
    """The outbox as an older Conveyor made it, holding ``ids`` as it wrote them."""
    if isinstance(box, PostgresOutbox):
        execute(box, "CREATE SCHEMA IF NOT EXISTS {schema}")
        execute(box, OLD_POSTGRES_TABLE)
        execute(box, OLD_POSTGRES_INDEX)
    else:
        execute(box, OLD_SQLITE_TABLE)
        execute(box, OLD_SQLITE_INDEX)
    payload = Login(user="old", password=SecretStr("old secret")).model_dump_json().encode()
    for job_id in ids:
        execute(
            box,
            "INSERT INTO {schema}.conveyor_outbox (id, queue, name, payload, priority, "
            "max_attempts, run_at, delay, created_at) VALUES (?, 'outbox', ?, ?, 0, 3, NULL, "
            "0.0, ?)",
            [job_id, login.name, payload, time.time()],
        )


async def test_a_secret_header_is_written_with_the_job_and_relayed(
    outbox_url: str, target_url: str, redis_url: str
) -> None:
    box = outbox_for_url(outbox_url)
    box.ensure_schema()
    assert outbox_columns(box) == COLUMNS
    async with Queue.from_url(redis_url, outbox=outbox_url) as queue:
        await enqueue(queue, box, "login-1")

    ((job_id, stored),) = outbox_rows(box)
    assert job_id == "login-1" and stored is not None
    assert decode_headers(stored) == SECRET_HEADERS
    assert SECRETS_HEADER in stored

    relay = Relay(box, target_url)
    report = await relay.run_once()
    assert (report.rows, report.moved, report.set_aside) == (1, 1, 0)
    await relay.close()
    assert outbox_rows(box) == []

    async with Queue.from_url(target_url) as target:
        info = await target.get("login-1")
    assert info is not None
    assert info.headers == SECRET_HEADERS
    assert info.payload == {"user": "ada", "password": SECRET}  # what the handler gets
    assert info.redacted_payload == {"user": "ada", "password": "**********"}


class RecordingRedis(RedisDriver):
    """The real Redis driver, keeping a copy of what the relay asks it to insert."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.inserted: list[NewJob] = []

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        self.inserted += jobs
        return await super().job_insert_many(jobs, now=now)


async def test_the_relay_hands_redis_the_header(outbox_url: str, redis_url: str) -> None:
    box = outbox_for_url(outbox_url)
    box.ensure_schema()
    async with Queue.from_url(redis_url, outbox=outbox_url) as queue:
        await enqueue(queue, box, "login-redis")
        stored = outbox_rows(box)[0][1]
        target = RecordingRedis(redis_url)
        await target.open()
        try:
            relay = Relay(box, target)
            assert (await relay.run_once()).moved == 1
            await relay.close()
        finally:
            await target.close()
        (sent,) = target.inserted
        assert sent.id == "login-redis" and sent.headers == stored
        assert decode_headers(sent.headers) == SECRET_HEADERS

        info = await queue.get("login-redis")
        assert info is not None
        assert info.headers == SECRET_HEADERS
        assert info.redacted_payload == {"user": "ada", "password": "**********"}


async def test_a_rollback_leaves_no_row(outbox_url: str, target_url: str, redis_url: str) -> None:
    box = outbox_for_url(outbox_url)
    box.ensure_schema()
    async with Queue.from_url(redis_url, outbox=outbox_url) as queue:
        await enqueue(queue, box, "rolled-back", commit=False)
    assert outbox_rows(box) == []
    assert execute(box, "SELECT count(*) FROM {schema}.app_user") == [(0,)]
    relay = Relay(box, target_url)
    assert (await relay.run_once()).rows == 0
    await relay.close()
    async with Queue.from_url(target_url) as target:
        assert await target.get("rolled-back") is None


async def test_an_old_table_is_upgraded_by_the_relay_and_its_rows_relayed(
    outbox_url: str, target_url: str, redis_url: str
) -> None:
    box = outbox_for_url(outbox_url)
    make_old_table(box, ["old-1", "old-2"])
    assert "headers" not in outbox_columns(box)

    # A producer of this version on the table not yet upgraded: refused, nothing written.
    async with Queue.from_url(redis_url, outbox=outbox_url) as queue:
        with pytest.raises(InvalidArgument, match=r"older Conveyor.*conveyor migrate --outbox"):
            await enqueue(queue, box, "too-early")
    ids = execute(box, "SELECT id FROM {schema}.conveyor_outbox ORDER BY seq")
    assert ids == [("old-1",), ("old-2",)]

    # Starting the relay upgrades the table; the old rows move as jobs without headers.
    relay = Relay(box, target_url)
    report = await relay.run_once()
    assert (report.rows, report.moved, report.set_aside) == (2, 2, 0)
    assert outbox_columns(box) == COLUMNS  # as a table made by this version

    async with Queue.from_url(redis_url, outbox=outbox_url) as queue:
        await enqueue(queue, box, "new-1")
    assert (await relay.run_once()).moved == 1
    await relay.close()

    async with Queue.from_url(target_url) as target:
        old, new = await target.get("old-1"), await target.get("new-1")
    assert old is not None and old.headers == {} and old.payload["user"] == "old"
    assert new is not None and new.headers == SECRET_HEADERS


def test_concurrent_upgrades_of_an_old_table(outbox_url: str) -> None:
    box = outbox_for_url(outbox_url)
    make_old_table(box, ["old"])
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def upgrade() -> None:
        try:
            start.wait(10)
            box.ensure_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert outbox_columns(box).count("headers") == 1
    assert outbox_rows(box) == [("old", None)]
    box.ensure_schema()  # up to date: nothing to do


async def test_a_postgres_upgrade_through_sqlalchemy_reports_the_old_table(
    pg_url: str, redis_url: str
) -> None:
    """The error a SQLAlchemy connection raises (wrapping psycopg's) is recognised too."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    box = outbox_for_url(pg_url)
    assert isinstance(box, PostgresOutbox)
    make_old_table(box, [])
    engine = sqlalchemy.create_engine(
        box.conninfo.replace("postgresql://", "postgresql+psycopg://")
    )
    try:
        async with Queue.from_url(redis_url, outbox=pg_url) as queue:
            with (
                engine.connect() as conn,
                conn.begin(),
                pytest.raises(InvalidArgument, match="older Conveyor"),
            ):
                await queue.enqueue(
                    login, Login(user="a", password=SecretStr("b")), connection=conn
                )
            box.ensure_schema()
            with engine.connect() as conn, conn.begin():
                await queue.enqueue(
                    login, Login(user="a", password=SecretStr("b")), job_id="sa", connection=conn
                )
    finally:
        engine.dispose()
    ((job_id, stored),) = outbox_rows(box)
    assert job_id == "sa" and decode_headers(stored) == SECRET_HEADERS


async def test_rows_with_unreadable_headers_are_set_aside(outbox_url: str, target_url: str) -> None:
    box = outbox_for_url(outbox_url)
    box.ensure_schema()
    columns = "id, queue, name, payload, priority, max_attempts, delay, created_at, headers"
    insert = (
        f"INSERT INTO {{schema}}.conveyor_outbox ({columns}) "
        "VALUES (?, 'outbox', ?, ?, 0, 3, 0.0, ?, ?)"
    )
    payload = b'{"user":"u","password":"p"}'
    bad = ["not json", '["a list"]', '{"n":1}']
    for n, headers in enumerate([*bad, '{"k":"v"}', None]):
        execute(box, insert, [f"row-{n}", login.name, payload, time.time(), headers])
    if isinstance(box, SQLiteOutbox):  # SQLite keeps whatever type it is given
        execute(box, insert, ["row-blob", login.name, payload, time.time(), b'{"k":"v"}'])

    relay = Relay(box, target_url)
    report = await relay.run_once()
    await relay.close()
    refused = {f"row-{n}" for n in range(len(bad))} | (
        {"row-blob"} if isinstance(box, SQLiteOutbox) else set()
    )
    assert (report.moved, report.set_aside) == (2, len(refused))
    assert all("headers" in error for error in report.refused.values())
    left = execute(box, "SELECT id FROM {schema}.conveyor_outbox WHERE failed_at IS NOT NULL")
    assert {r[0] for r in left} == refused
    async with Queue.from_url(target_url) as target:
        kept, plain = await target.get(f"row-{len(bad)}"), await target.get(f"row-{len(bad) + 1}")
    assert kept is not None and kept.headers == {"k": "v"}
    assert plain is not None and plain.headers == {}


async def test_many_jobs_with_headers_fill_several_sqlite_statements(
    sqlite_url: str, redis_url: str
) -> None:
    box = outbox_for_url(sqlite_url)
    box.ensure_schema()
    conn = sqlite3.connect(Path(sqlite_url.removeprefix("sqlite:///")), timeout=10)
    async with Queue.from_url(redis_url, outbox=sqlite_url) as queue:
        requests = [
            login.request(Login(user=f"u{i}", password=SecretStr("s")), job_id=f"many-{i}")
            for i in range(250)
        ]
        with conn:
            await queue.enqueue_many(requests, connection=conn)
    conn.close()
    rows = outbox_rows(box)
    assert [r[0] for r in rows] == [f"many-{i}" for i in range(250)]
    assert all(r[1] is not None and decode_headers(r[1]) == SECRET_HEADERS for r in rows)


def test_sqlite_upgrade_statements_for_an_applications_own_migrations(sqlite_url: str) -> None:
    box = outbox_for_url(sqlite_url)
    assert isinstance(box, SQLiteOutbox)
    make_old_table(box, ["old"])
    conn = sqlite3.connect(box.path)
    with conn:
        for statement in box.schema_statements() + box.upgrade_statements():
            conn.execute(statement)
    conn.close()
    assert outbox_columns(box) == COLUMNS
    assert outbox_rows(box) == [("old", None)]
