"""``enqueue(..., connection=conn)`` on the PostgreSQL backend, end to end: the caller's psycopg
or SQLAlchemy connection writes the job into the queue's own tables inside the caller's
transaction, and a worker runs it once that commits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conveyor import (
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
from tests.conftest import drop_test_schema, postgres_test_url
from tests.transactional.helpers import Invite, drain, send_invite
from tests.transactional.kinds import KINDS, Kind, make_kind


@pytest.fixture
def url(postgres_base_url: str) -> Iterator[str]:
    queue_url = postgres_test_url(postgres_base_url)
    try:
        yield queue_url
    finally:
        drop_test_schema(queue_url)


@pytest.fixture
async def queue(url: str) -> AsyncIterator[Queue]:
    async with Queue.from_url(url) as q:
        yield q


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


async def nothing_seen(queue: Queue, *job_ids: str) -> None:
    """No reader and no worker ever sees the jobs."""
    for job_id in job_ids:
        assert await queue.get(job_id) is None
    assert await queue.list_jobs() == []
    assert await drain(queue) == []


async def test_a_committed_job_exists_and_a_worker_runs_it(
    queue: Queue, kind: Kind, conn: Any
) -> None:
    handle = await queue.enqueue(
        send_invite, Invite(email="ada@example.com"), job_id="invite:ada", connection=conn
    )
    assert handle.id == "invite:ada" and not handle.duplicate
    assert await queue.get("invite:ada") is None, "seen before the caller committed"
    await kind.commit(conn)
    info = await queue.get("invite:ada")
    assert info is not None and info.state is JobState.QUEUED and info.queue == "emails"
    assert await drain(queue) == ["ada@example.com"]
    assert await handle.result(timeout=WAIT_TIMEOUT) == "sent to ada@example.com"


async def test_a_rolled_back_job_is_never_seen(queue: Queue, kind: Kind, conn: Any) -> None:
    await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
    await kind.rollback(conn)
    await nothing_seen(queue, "a")


async def test_an_exception_inside_the_transaction_leaves_no_job(
    queue: Queue, kind: Kind, conn: Any
) -> None:
    try:
        await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
        raise RuntimeError("payment declined")
    except RuntimeError:
        await kind.rollback(conn)
    await nothing_seen(queue, "a")


async def test_a_rolled_back_savepoint_takes_only_its_jobs(
    queue: Queue, kind: Kind, conn: Any
) -> None:
    await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
    await kind.execute(conn, "SAVEPOINT maybe")
    await queue.enqueue(send_invite, Invite(email="b@example.com"), job_id="b", connection=conn)
    await kind.execute(conn, "ROLLBACK TO SAVEPOINT maybe")
    await queue.enqueue(send_invite, Invite(email="c@example.com"), job_id="c", connection=conn)
    await kind.commit(conn)
    assert await queue.get("b") is None
    assert sorted(await drain(queue)) == ["a@example.com", "c@example.com"]


async def test_a_duplicate_job_id_is_reported(queue: Queue, kind: Kind, conn: Any) -> None:
    first = await queue.enqueue(
        send_invite, Invite(email="a@example.com"), job_id="a", connection=conn
    )
    await kind.commit(conn)
    again = await queue.enqueue_many(
        [
            send_invite.request(Invite(email="other@example.com"), job_id="a"),
            send_invite.request(Invite(email="b@example.com"), job_id="b"),
        ],
        connection=conn,
    )
    await kind.commit(conn)
    assert [first.duplicate] + [h.duplicate for h in again] == [False, True, False]
    assert sorted(await drain(queue)) == ["a@example.com", "b@example.com"]


async def test_dedup_keys_are_decided_inside_the_callers_transaction(
    queue: Queue, kind: Kind, conn: Any
) -> None:
    key = UntilFinished(key="invite:a")
    first = await queue.enqueue(
        send_invite, Invite(email="a@example.com"), dedup=key, connection=conn
    )
    again = await queue.enqueue(
        send_invite, Invite(email="b@example.com"), dedup=key, connection=conn
    )
    assert (again.id, again.outcome) == (first.id, InsertStatus.DUPLICATE)
    await kind.rollback(conn)
    await nothing_seen(queue)  # neither the job nor its key outlives the rollback
    third = await queue.enqueue(
        send_invite, Invite(email="c@example.com"), dedup=key, connection=conn
    )
    assert third.outcome is InsertStatus.INSERTED
    await kind.commit(conn)
    fourth = await queue.enqueue(send_invite, Invite(email="d@example.com"), dedup=key)
    assert (fourth.id, fourth.outcome) == (third.id, InsertStatus.DUPLICATE)
    assert await drain(queue) == ["c@example.com"]


async def test_an_idle_worker_is_woken_at_the_commit(queue: Queue, postgres_base_url: str) -> None:
    worker = Worker(queue, jobs=[send_invite], config=fast_config(poll_interval=30.0))

    @worker.handles(send_invite)
    async def handle(payload: Invite, ctx: JobContext) -> str:
        return payload.email

    task = asyncio.create_task(worker.run())
    try:
        async with await psycopg.AsyncConnection.connect(postgres_base_url) as conn:
            await queue.enqueue(
                send_invite, Invite(email="a@example.com"), job_id="a", connection=conn
            )
            await conn.commit()
        await wait_state(queue, "a", JobState.COMPLETED, timeout=5.0)
    finally:
        worker.stop(grace=0)
        await asyncio.wait_for(task, WAIT_TIMEOUT)


def test_sync_queue_writes_in_the_callers_thread(url: str, postgres_base_url: str) -> None:
    with SyncQueue.from_url(url) as sync_queue:

        def view(email: str, commit: bool) -> str:
            with psycopg.connect(postgres_base_url) as conn:
                handle = sync_queue.enqueue(
                    send_invite, Invite(email=email), job_id=email, connection=conn
                )
                conn.commit() if commit else conn.rollback()
                return handle.id

        with ThreadPoolExecutor(2) as pool:
            kept = pool.submit(view, "a@example.com", True).result()
            dropped = pool.submit(view, "b@example.com", False).result()
        assert threading.current_thread() is threading.main_thread()
        assert sync_queue.get(kept) is not None
        assert sync_queue.get(dropped) is None


# -- refused connections: a clear error, and nothing written ----------------------------------


async def test_a_connection_to_another_database_is_refused(
    queue: Queue, postgres_base_url: str
) -> None:
    base, _, _ = postgres_base_url.rpartition("/")
    with psycopg.connect(postgres_base_url, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = 'txn_other'").fetchone():
            try:
                admin.execute("CREATE DATABASE txn_other")
            except psycopg.errors.UniqueViolation:
                pass  # another test process made it first
    with psycopg.connect(f"{base}/txn_other") as other:
        with pytest.raises(InvalidArgument, match="does not reach the queue's store"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=other)
        # One statement, so one round trip: a database without the schema fails it, and in
        # PostgreSQL a failed statement leaves the transaction only to be rolled back.
        other.rollback()
        assert other.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(InvalidArgument, match="does not reach the queue's store"):
            await queue.enqueue(
                send_invite, Invite(email="a@example.com"), dedup=UntilFinished(), connection=other
            )
        other.rollback()
    assert await queue.list_jobs() == []


async def test_another_store_of_the_same_database_is_refused(
    queue: Queue, url: str, postgres_base_url: str
) -> None:
    """A second queue in another schema of the same database: the connection reaches both, and
    the job must go to the queue it was enqueued on, never be written for a store it is not."""
    other_url = postgres_test_url(postgres_base_url)
    try:
        async with Queue.from_url(other_url) as other_queue:
            with psycopg.connect(postgres_base_url) as conn:
                await other_queue.enqueue(
                    send_invite, Invite(email="a@example.com"), job_id="a", connection=conn
                )
                conn.commit()
            assert await other_queue.get("a") is not None
        assert await queue.get("a") is None
    finally:
        drop_test_schema(other_url)


async def test_an_autocommit_connection_is_refused(queue: Queue, postgres_base_url: str) -> None:
    with psycopg.connect(postgres_base_url, autocommit=True) as conn:
        with pytest.raises(InvalidArgument, match="autocommit mode outside a transaction"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
        with conn.transaction():
            await queue.enqueue(
                send_invite, Invite(email="b@example.com"), job_id="b", connection=conn
            )
    assert [j.id for j in await queue.list_jobs()] == ["b"]


async def test_a_sqlite3_connection_is_refused(queue: Queue, tmp_path: Path) -> None:
    lite = sqlite3.connect(tmp_path / "app.db")
    try:
        with pytest.raises(
            InvalidArgument, match=r"sqlite3 connection, which cannot write to this queue's"
        ) as caught:
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=lite)
        assert "a postgresql database" in str(caught.value)
        assert not lite.in_transaction
    finally:
        lite.close()
    assert await queue.list_jobs() == []


def test_batches_whose_keys_overlap_in_other_orders_wait_instead_of_deadlocking(
    url: str, postgres_base_url: str
) -> None:
    # A holds key 1 in its open transaction; B enqueues keys 2 and 1, and must wait for A
    # without holding key 2 (its keys are locked in one order, all at once); then A takes key 2.
    # Locking B's keys one by one in batch order would deadlock here, and one side would fail.
    one, two = UntilFinished(key="k1"), UntilFinished(key="k2")
    with (
        SyncQueue.from_url(url) as sync_queue,
        ThreadPoolExecutor(1) as pool,
        psycopg.connect(postgres_base_url) as a,
        psycopg.connect(postgres_base_url) as b,
    ):
        b_pid = b.info.backend_pid
        sync_queue.enqueue(send_invite, Invite(email="a1@example.com"), dedup=one, connection=a)
        requests = [
            send_invite.request(Invite(email="b2@example.com"), dedup=two),
            send_invite.request(Invite(email="b1@example.com"), dedup=one),
        ]
        waiting = pool.submit(sync_queue.enqueue_many, requests, connection=b)
        with psycopg.connect(postgres_base_url, autocommit=True) as watch:
            deadline = time.monotonic() + WAIT_TIMEOUT
            while not watch.execute(
                "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", [b_pid]
            ).fetchone():
                assert time.monotonic() < deadline, "B never waited for A's key"
                time.sleep(0.01)
        taken = sync_queue.enqueue(
            send_invite, Invite(email="a2@example.com"), dedup=two, connection=a
        )
        assert taken.outcome is InsertStatus.INSERTED
        a.commit()
        first, second = waiting.result(timeout=WAIT_TIMEOUT)
        b.commit()
    assert (first.outcome, second.outcome) == (InsertStatus.DUPLICATE, InsertStatus.DUPLICATE)
