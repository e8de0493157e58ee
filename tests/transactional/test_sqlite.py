"""``enqueue(..., connection=conn)`` on SQLite: the job is written with the caller's own sqlite3
connection (or SQLAlchemy session) to the queue's file, inside the caller's transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conveyor import (
    Debounce,
    InsertStatus,
    InvalidArgument,
    JobContext,
    JobState,
    Queue,
    SyncQueue,
    UntilFinished,
    Worker,
)
from tests.conformance.worker.helpers import WAIT_TIMEOUT, fast_config, wait_state
from tests.transactional.helpers import Invite, drain, send_invite


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
async def queue(db_path: Path) -> AsyncIterator[Queue]:
    q = Queue.from_url(f"sqlite:///{db_path}")
    await q.connect()  # the schema exists before the app's connection writes into it
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    """The app's own connection, in sqlite3's default transaction mode, with its own table."""
    c = sqlite3.connect(db_path)
    c.execute("CREATE TABLE IF NOT EXISTS invitation (email TEXT PRIMARY KEY)")
    c.commit()
    try:
        yield c
    finally:
        c.close()


async def nothing_seen(queue: Queue, *job_ids: str) -> None:
    """No reader and no worker ever sees the jobs."""
    for job_id in job_ids:
        assert await queue.get(job_id) is None
    assert await queue.list_jobs() == []
    assert await drain(queue) == []


async def test_a_committed_job_exists_and_a_worker_runs_it(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    conn.execute("INSERT INTO invitation VALUES ('ada@example.com')")
    handle = await queue.enqueue(
        send_invite, Invite(email="ada@example.com"), job_id="invite:ada", connection=conn
    )
    assert handle.id == "invite:ada" and not handle.duplicate
    assert conn.in_transaction
    assert await queue.get("invite:ada") is None, "seen before the caller committed"
    conn.commit()
    info = await queue.get("invite:ada")
    assert info is not None and info.state is JobState.QUEUED and info.queue == "emails"
    assert [q.name for q in await queue.queues()] == ["emails"]
    assert await drain(queue) == ["ada@example.com"]
    assert await handle.result(timeout=WAIT_TIMEOUT) == "sent to ada@example.com"


async def test_a_rolled_back_job_is_never_seen(queue: Queue, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO invitation VALUES ('ada@example.com')")
    await queue.enqueue(
        send_invite, Invite(email="ada@example.com"), job_id="invite:ada", connection=conn
    )
    conn.rollback()
    await nothing_seen(queue, "invite:ada")
    assert conn.execute("SELECT count(*) FROM invitation").fetchone() == (0,)


async def test_an_exception_inside_the_transaction_leaves_no_job(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    with pytest.raises(RuntimeError, match="payment declined"), conn:
        conn.execute("INSERT INTO invitation VALUES ('ada@example.com')")
        await queue.enqueue(
            send_invite, Invite(email="ada@example.com"), job_id="invite:ada", connection=conn
        )
        raise RuntimeError("payment declined")
    await nothing_seen(queue, "invite:ada")


async def test_a_rolled_back_savepoint_takes_only_its_jobs(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
    conn.execute("SAVEPOINT maybe")
    await queue.enqueue(send_invite, Invite(email="b@example.com"), job_id="b", connection=conn)
    conn.execute("ROLLBACK TO maybe")
    conn.execute("RELEASE maybe")
    await queue.enqueue(send_invite, Invite(email="c@example.com"), job_id="c", connection=conn)
    conn.commit()
    assert await queue.get("b") is None
    assert sorted(await drain(queue)) == ["a@example.com", "c@example.com"]
    assert {j.id for j in await queue.list_jobs()} == {"a", "c"}


async def test_a_duplicate_job_id_is_reported_and_writes_nothing(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    first = await queue.enqueue(
        send_invite, Invite(email="ada@example.com"), job_id="invite:ada", connection=conn
    )
    again = await queue.enqueue(  # in the same transaction
        send_invite, Invite(email="other@example.com"), job_id="invite:ada", connection=conn
    )
    conn.commit()
    later = await queue.enqueue(  # in a later one
        send_invite, Invite(email="other@example.com"), job_id="invite:ada", connection=conn
    )
    conn.commit()
    assert (first.duplicate, again.duplicate, later.duplicate) == (False, True, True)
    assert [j.id for j in await queue.list_jobs()] == ["invite:ada"]
    assert await drain(queue) == ["ada@example.com"]


async def test_dedup_keys_are_decided_inside_the_callers_transaction(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    key = UntilFinished(key="invite:ada")
    first = await queue.enqueue(
        send_invite, Invite(email="ada@example.com"), dedup=key, connection=conn
    )
    again = await queue.enqueue(
        send_invite, Invite(email="other@example.com"), dedup=key, connection=conn
    )
    assert (again.id, again.outcome) == (first.id, InsertStatus.DUPLICATE)
    conn.rollback()
    await nothing_seen(queue)  # neither the job nor its key outlives the rollback
    settle = Debounce(30, key="digest")
    digest = await queue.enqueue(
        send_invite, Invite(email="a@example.com"), dedup=settle, connection=conn
    )
    replaced = await queue.enqueue(
        send_invite, Invite(email="b@example.com"), dedup=settle, connection=conn
    )
    conn.commit()
    assert (replaced.id, replaced.outcome) == (digest.id, InsertStatus.REPLACED)
    info = await queue.get(digest.id)
    assert info is not None and info.payload == {"email": "b@example.com"}


async def test_enqueue_many_and_by_name_take_the_connection(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    handles = await queue.enqueue_many(
        [
            send_invite.request(Invite(email="a@example.com"), job_id="a"),
            send_invite.request(Invite(email="b@example.com"), job_id="b", delay=3600),
        ],
        connection=conn,
    )
    by_name = await queue.enqueue_by_name(
        "txn.send_invite", {"email": "c@example.com"}, job_id="c", queue="emails", connection=conn
    )
    assert [h.id for h in handles] == ["a", "b"] and by_name.id == "c"
    assert await queue.list_jobs() == []
    conn.commit()
    states = {j.id: j.state for j in await queue.list_jobs()}
    assert states == {"a": JobState.QUEUED, "b": JobState.SCHEDULED, "c": JobState.QUEUED}
    assert sorted(await drain(queue)) == ["a@example.com", "c@example.com"]


async def test_an_explicit_transaction_on_an_autocommit_connection_holds_the_job(
    queue: Queue, db_path: Path
) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
        conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        await queue.enqueue(send_invite, Invite(email="b@example.com"), job_id="b", connection=conn)
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert [j.id for j in await queue.list_jobs()] == ["b"]


async def test_a_running_worker_picks_the_job_up_after_the_commit(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    """Nothing notifies at the caller's commit: the idle worker sees the file change when it
    next polls."""
    worker = Worker(queue, jobs=[send_invite], config=fast_config())

    @worker.handles(send_invite)
    async def handle(payload: Invite, ctx: JobContext) -> str:
        return payload.email

    task = asyncio.create_task(worker.run())
    try:
        await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
        conn.commit()
        await wait_state(queue, "a", JobState.COMPLETED)
    finally:
        worker.stop(grace=0)
        await asyncio.wait_for(task, WAIT_TIMEOUT)


async def test_a_queue_first_used_inside_the_transaction_opens_at_once(db_path: Path) -> None:
    """Opening a file that has the queue's tables takes no write lock, so a queue whose first
    call is an enqueue inside the caller's write transaction does not wait for that lock."""
    async with Queue.from_url(f"sqlite:///{db_path}"):
        pass  # the tables exist (made at startup, or by another process)
    conn = sqlite3.connect(db_path)
    fresh = Queue.from_url(f"sqlite:///{db_path}")
    try:
        conn.execute("CREATE TABLE invitation (email TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO invitation VALUES ('a@example.com')")  # holds the write lock
        assert conn.in_transaction
        handle = await asyncio.wait_for(
            fresh.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn),
            5.0,  # the busy timeout is 10 s
        )
        conn.commit()
        assert handle.id == "a" and await fresh.get("a") is not None
    finally:
        conn.close()
        await fresh.close()


# -- SyncQueue: the write happens in the caller's thread ---------------------------------------


def test_sync_queue_writes_in_the_callers_thread(db_path: Path) -> None:
    """sqlite3 refuses a connection from another thread than its own: the job is written in
    the caller's thread, not on the portal's."""
    with SyncQueue.from_url(f"sqlite:///{db_path}") as sync_queue:

        def view(email: str, commit: bool) -> str:
            conn = sqlite3.connect(db_path)  # owned by this (pool) thread
            try:
                handle = sync_queue.enqueue(
                    send_invite, Invite(email=email), job_id=email, connection=conn
                )
                conn.commit() if commit else conn.rollback()
                return handle.id
            finally:
                conn.close()

        with ThreadPoolExecutor(2) as pool:
            kept = pool.submit(view, "a@example.com", True).result()
            dropped = pool.submit(view, "b@example.com", False).result()
        assert threading.current_thread() is threading.main_thread()
        assert sync_queue.get(kept) is not None
        assert sync_queue.get(dropped) is None
        conn = sqlite3.connect(db_path)
        try:
            many = sync_queue.enqueue_many(
                [send_invite.request(Invite(email="c@example.com"), job_id="c")], connection=conn
            )
            named = sync_queue.enqueue_by_name(
                "txn.send_invite", {"email": "d@example.com"}, job_id="d", connection=conn
            )
            again = sync_queue.enqueue(
                send_invite, Invite(email="a@example.com"), job_id=kept, connection=conn
            )
            conn.commit()
        finally:
            conn.close()
        assert [h.id for h in many] == ["c"] and named.id == "d" and again.duplicate
        assert {j.id for j in sync_queue.list_jobs()} == {kept, "c", "d"}


# -- SQLAlchemy sessions on SQLite ------------------------------------------------------------


async def test_a_sqlalchemy_session_on_sqlite(
    queue: Queue, conn: sqlite3.Connection, db_path: Path
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{db_path}")
    try:
        with Session(engine) as session:
            session.execute(text("INSERT INTO invitation VALUES ('a@example.com')"))
            await queue.enqueue(
                send_invite, Invite(email="a@example.com"), job_id="a", connection=session
            )
            session.commit()
        with Session(engine) as session:
            await queue.enqueue(
                send_invite, Invite(email="b@example.com"), job_id="b", connection=session
            )
            session.rollback()
        with engine.connect() as connection:  # a Connection, no transaction begun yet
            await queue.enqueue(
                send_invite, Invite(email="c@example.com"), job_id="c", connection=connection
            )
            connection.commit()
    finally:
        engine.dispose()
    assert {j.id for j in await queue.list_jobs()} == {"a", "c"}
    assert sorted(await drain(queue)) == ["a@example.com", "c@example.com"]


# -- refused connections: a clear error, and nothing written ----------------------------------


async def unchanged(queue: Queue, conn: sqlite3.Connection) -> None:
    assert not conn.in_transaction
    assert await queue.list_jobs() == []


async def test_a_connection_to_another_file_is_refused(
    queue: Queue, tmp_path: Path, db_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "other.db")
    memory = sqlite3.connect(":memory:")
    try:
        with pytest.raises(InvalidArgument, match=r"other\.db, not to this queue's file .*app\.db"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=other)
        await unchanged(queue, other)
        with pytest.raises(InvalidArgument, match="in-memory or temporary SQLite database"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=memory)
        await unchanged(queue, memory)
    finally:
        other.close()
        memory.close()


async def test_an_autocommit_connection_outside_a_transaction_is_refused(
    queue: Queue, db_path: Path
) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        with pytest.raises(InvalidArgument, match="autocommit mode outside a transaction"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
        await unchanged(queue, conn)
    finally:
        conn.close()


async def test_an_unknown_connection_type_is_refused(queue: Queue) -> None:
    with pytest.raises(InvalidArgument, match=r"builtins\.dict.*supported: sqlite3\.Connection"):
        await queue.enqueue(send_invite, Invite(email="a@example.com"), connection={})
    assert await queue.list_jobs() == []


async def test_a_bad_payload_is_refused_before_the_connection_is_used(
    queue: Queue, conn: sqlite3.Connection
) -> None:
    with pytest.raises(InvalidArgument, match="invalid job_id"):
        await queue.enqueue_many(
            [
                send_invite.request(Invite(email="a@example.com"), job_id="a"),
                send_invite.request(Invite(email="b@example.com"), job_id=""),
            ],
            connection=conn,
        )
    await unchanged(queue, conn)


async def test_a_queue_without_a_sql_backend_or_outbox_is_refused(
    conn: sqlite3.Connection,
) -> None:
    async with Queue.from_url("memory://txn-refused") as memory_queue:
        with pytest.raises(InvalidArgument, match=r"needs a SQL backend .* or an outbox"):
            await memory_queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
        assert not conn.in_transaction


def test_sync_queue_refuses_an_async_connection(db_path: Path) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")  # unused
    session = AsyncSession(engine)
    with SyncQueue.from_url(f"sqlite:///{db_path}") as sync_queue:
        with pytest.raises(InvalidArgument, match="AsyncSession, which only async code can use"):
            sync_queue.enqueue(send_invite, Invite(email="a@example.com"), connection=session)
        assert sync_queue.list_jobs() == []
