"""The psycopg and SQLAlchemy adapters of ``enqueue(..., connection=conn)`` against a real
PostgreSQL server, each test in a schema of its own.

The writer here is a tiny test-only :class:`TransactionalWriter` over a table of that schema,
given to a memory queue as its outbox: it proves what the adapters do (run the plan on the
caller's connection, inside its transaction, with ``%(name)s`` parameters and tuple rows)
whatever PostgreSQL store will take such writes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conveyor import InvalidArgument, JobState, Queue, SyncQueue
from conveyor.drivers.records import InsertResult, InsertStatus, NewJob
from conveyor.drivers.transactional import Dialect, Plan, Statement, TransactionalWriter
from tests.transactional.helpers import Invite, send_invite
from tests.transactional.kinds import KINDS, Kind, make_kind


class TableWriter:
    """Inserts jobs into ``<schema>.job`` (id, queue, name, payload), deduplicated by id."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def __repr__(self) -> str:
        return f"TableWriter({self.schema!r})"

    @property
    def dialect(self) -> Dialect:
        return "postgresql"

    def insert_plan(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Plan[list[InsertResult]]:
        return self._plan(list(jobs))

    def _plan(self, jobs: list[NewJob]) -> Plan[list[InsertResult]]:
        ((found,),) = yield Statement(
            "SELECT to_regclass(%(table)s) IS NOT NULL", {"table": f'"{self.schema}".job'}
        )
        if not found:
            raise InvalidArgument(f"the connection does not reach schema {self.schema}")
        results: list[InsertResult] = []
        for job in jobs:
            inserted = yield Statement(
                f'INSERT INTO "{self.schema}".job (id, queue, name, payload) '
                "VALUES (%(id)s, %(queue)s, %(name)s, %(payload)s) "
                "ON CONFLICT (id) DO NOTHING RETURNING id",
                {"id": job.id, "queue": job.queue, "name": job.name, "payload": job.payload},
            )
            status = InsertStatus.INSERTED if inserted else InsertStatus.DUPLICATE
            results.append(InsertResult(job.id, status, JobState.QUEUED))
        return results


def test_the_writer_is_a_transactional_writer() -> None:
    assert isinstance(TableWriter("s"), TransactionalWriter)


@pytest.fixture
def schema(postgres_base_url: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_base_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
        admin.execute(
            f'CREATE TABLE "{name}".job (id text PRIMARY KEY, queue text, name text, payload bytea)'
        )
        admin.execute(f'CREATE TABLE "{name}".invitation (email text PRIMARY KEY)')
    try:
        yield name
    finally:
        with psycopg.connect(postgres_base_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
async def queue(schema: str) -> AsyncIterator[Queue]:
    async with Queue.from_url(f"memory://{uuid.uuid4().hex}", outbox=TableWriter(schema)) as q:
        yield q


def stored(url: str, schema: str) -> list[str]:
    """The job ids committed to the schema's table, read on a connection of its own."""
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(f'SELECT id FROM "{schema}".job ORDER BY id')]


# -- every kind of connection -----------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, postgres_base_url: str) -> Kind:
    return make_kind(str(request.param), postgres_base_url)


@pytest.fixture
async def conn(kind: Kind) -> AsyncIterator[Any]:
    c = await kind.open()
    try:
        yield c
    finally:
        await kind.close(c)


async def test_commit_keeps_the_job_and_the_row(
    queue: Queue, kind: Kind, conn: Any, schema: str, postgres_base_url: str
) -> None:
    await kind.execute(conn, f"INSERT INTO \"{schema}\".invitation VALUES ('ada@example.com')")
    handle = await queue.enqueue(
        send_invite, Invite(email="ada@example.com"), job_id="invite:ada", connection=conn
    )
    assert handle.id == "invite:ada" and not handle.duplicate
    assert stored(postgres_base_url, schema) == [], "seen before the caller committed"
    await kind.commit(conn)
    assert stored(postgres_base_url, schema) == ["invite:ada"]


async def test_rollback_leaves_nothing(
    queue: Queue, kind: Kind, conn: Any, schema: str, postgres_base_url: str
) -> None:
    await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
    await kind.rollback(conn)
    await queue.enqueue(send_invite, Invite(email="b@example.com"), job_id="b", connection=conn)
    await kind.commit(conn)
    assert stored(postgres_base_url, schema) == ["b"]


async def test_an_exception_inside_the_transaction_leaves_nothing(
    queue: Queue, kind: Kind, conn: Any, schema: str, postgres_base_url: str
) -> None:
    try:
        await kind.execute(conn, f"INSERT INTO \"{schema}\".invitation VALUES ('a@example.com')")
        await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
        raise RuntimeError("payment declined")
    except RuntimeError:
        await kind.rollback(conn)
    assert stored(postgres_base_url, schema) == []


async def test_a_rolled_back_savepoint_takes_only_its_jobs(
    queue: Queue, kind: Kind, conn: Any, schema: str, postgres_base_url: str
) -> None:
    await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
    await kind.execute(conn, "SAVEPOINT maybe")
    await queue.enqueue(send_invite, Invite(email="b@example.com"), job_id="b", connection=conn)
    await kind.execute(conn, "ROLLBACK TO SAVEPOINT maybe")
    await queue.enqueue(send_invite, Invite(email="c@example.com"), job_id="c", connection=conn)
    await kind.commit(conn)
    assert stored(postgres_base_url, schema) == ["a", "c"]


async def test_a_duplicate_id_is_reported(
    queue: Queue, kind: Kind, conn: Any, schema: str, postgres_base_url: str
) -> None:
    first = await queue.enqueue(
        send_invite, Invite(email="a@example.com"), job_id="a", connection=conn
    )
    again = await queue.enqueue_many(
        [
            send_invite.request(Invite(email="a@example.com"), job_id="a"),
            send_invite.request(Invite(email="b@example.com"), job_id="b"),
        ],
        connection=conn,
    )
    await kind.commit(conn)
    assert [first.duplicate] + [h.duplicate for h in again] == [False, True, False]
    assert stored(postgres_base_url, schema) == ["a", "b"]


# -- psycopg specifics -------------------------------------------------------------------------


async def test_psycopg_savepoints_with_nested_transactions(
    queue: Queue, schema: str, postgres_base_url: str
) -> None:
    conn = await psycopg.AsyncConnection.connect(postgres_base_url)
    try:
        async with conn.transaction():
            await queue.enqueue(
                send_invite, Invite(email="a@example.com"), job_id="a", connection=conn
            )
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await queue.enqueue(
                        send_invite, Invite(email="b@example.com"), job_id="b", connection=conn
                    )
                    raise RuntimeError("undo the savepoint")
    finally:
        await conn.close()
    assert stored(postgres_base_url, schema) == ["a"]


async def test_a_connection_returning_dicts_still_works(
    queue: Queue, schema: str, postgres_base_url: str
) -> None:
    with psycopg.connect(postgres_base_url, row_factory=dict_row) as conn:
        await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
        again = await queue.enqueue(
            send_invite, Invite(email="a@example.com"), job_id="a", connection=conn
        )
        conn.commit()
    assert again.duplicate
    assert stored(postgres_base_url, schema) == ["a"]


async def test_autocommit_is_refused_outside_a_transaction_and_fine_inside_one(
    queue: Queue, schema: str, postgres_base_url: str
) -> None:
    with psycopg.connect(postgres_base_url, autocommit=True) as conn:
        with pytest.raises(InvalidArgument, match=r"autocommit mode .* conn\.transaction\(\)"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
        with conn.transaction():
            await queue.enqueue(
                send_invite, Invite(email="b@example.com"), job_id="b", connection=conn
            )
    async with await psycopg.AsyncConnection.connect(postgres_base_url, autocommit=True) as aconn:
        with pytest.raises(InvalidArgument, match=r"async with conn\.transaction\(\)"):
            await queue.enqueue(send_invite, Invite(email="c@example.com"), connection=aconn)
    assert stored(postgres_base_url, schema) == ["b"]


async def test_sqlalchemy_autocommit_is_refused(
    queue: Queue, schema: str, postgres_base_url: str
) -> None:
    from sqlalchemy import create_engine

    url = postgres_base_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with (
            engine.connect() as conn,
            pytest.raises(InvalidArgument, match="psycopg connection in autocommit mode"),
        ):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
    finally:
        engine.dispose()
    assert stored(postgres_base_url, schema) == []


async def test_another_database_or_schema_is_refused(
    queue: Queue, schema: str, postgres_base_url: str
) -> None:
    """The plan's first statement checks that the connection reaches the writer's store."""
    base, _, _ = postgres_base_url.rpartition("/")
    with psycopg.connect(postgres_base_url, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'txn_other'").fetchone():
            try:
                admin.execute("CREATE DATABASE txn_other")
            except psycopg.errors.UniqueViolation:
                pass  # another test process made it first
    with psycopg.connect(f"{base}/txn_other") as other:
        with pytest.raises(InvalidArgument, match=f"does not reach schema {schema}"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=other)
        assert other.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        other.rollback()
    assert stored(postgres_base_url, schema) == []


async def test_the_wrong_dialect_is_refused_before_anything_is_written(
    queue: Queue, schema: str, postgres_base_url: str, tmp_path: Any
) -> None:
    import sqlite3

    lite = sqlite3.connect(tmp_path / "app.db")
    try:
        with pytest.raises(
            InvalidArgument, match=r"sqlite3 connection, which cannot write to the outbox"
        ):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=lite)
        assert not lite.in_transaction
    finally:
        lite.close()
    async with Queue.from_url(f"sqlite:///{tmp_path / 'queue.db'}") as sqlite_queue:
        with psycopg.connect(postgres_base_url) as conn:
            with pytest.raises(InvalidArgument, match=r"psycopg connection, which cannot write"):
                await sqlite_queue.enqueue(
                    send_invite, Invite(email="a@example.com"), connection=conn
                )
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert await sqlite_queue.list_jobs() == []


# -- SyncQueue ---------------------------------------------------------------------------------


def test_sync_queue_with_psycopg_and_a_sqlalchemy_session(
    schema: str, postgres_base_url: str
) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    url = f"memory://{uuid.uuid4().hex}"
    with SyncQueue.from_url(url, outbox=TableWriter(schema)) as sync_queue:
        with psycopg.connect(postgres_base_url) as conn:
            sync_queue.enqueue(
                send_invite, Invite(email="a@example.com"), job_id="a", connection=conn
            )
            conn.commit()
            sync_queue.enqueue(
                send_invite, Invite(email="b@example.com"), job_id="b", connection=conn
            )
            conn.rollback()
        engine = create_engine(postgres_base_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session:
                handle = sync_queue.enqueue_by_name(
                    "txn.send_invite", {"email": "c@example.com"}, job_id="c", connection=session
                )
                session.commit()
        finally:
            engine.dispose()
        assert handle.id == "c"
        async_conn_refused = "which only async code can use"
        with pytest.raises(InvalidArgument, match=async_conn_refused):
            sync_queue.enqueue(
                send_invite, Invite(email="d@example.com"), connection=_an_async_connection()
            )
    assert stored(postgres_base_url, schema) == ["a", "c"]


def _an_async_connection() -> Any:
    """An AsyncConnection object that is never connected (the check looks only at its type)."""
    return psycopg.AsyncConnection.__new__(psycopg.AsyncConnection)
