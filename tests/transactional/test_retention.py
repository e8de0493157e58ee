"""A job's own retention (``keep_completed`` / ``keep_failed``, from the enqueue or from its
definition) travels with ``enqueue(..., connection=conn)`` into the SQL backends, single jobs
and batches alike; the outbox to Redis cannot carry it and refuses it before writing anything."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor import InvalidArgument, Queue, job
from conveyor.drivers.records import JobRecord
from conveyor.outbox import outbox_for_url
from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url
from tests.transactional.helpers import Invite, send_invite
from tests.transactional.kinds import make_kind

kept_invite = job(
    "txn.kept_invite", Invite, result=str, queue="emails", keep_completed=60, keep_failed=600
)


async def _record(queue: Queue, job_id: str) -> JobRecord:
    [record] = await queue.driver.job_get_many([job_id])
    assert record is not None, f"job {job_id!r} was not written"
    return record


async def _enqueue_three(queue: Queue, conn: Any) -> None:
    """One job alone (per-enqueue override), then a batch: the definition's retention, and a
    per-request override of it."""
    await queue.enqueue(
        send_invite, Invite(email="a@x"), job_id="one", keep_completed=0, connection=conn
    )
    await queue.enqueue_many(
        [
            kept_invite.request(Invite(email="b@x"), job_id="defined"),
            kept_invite.request(
                Invite(email="c@x"), job_id="overridden", keep_failed=timedelta(days=2)
            ),
        ],
        connection=conn,
    )


async def _check_three(queue: Queue) -> None:
    one, defined, overridden = [await _record(queue, i) for i in ("one", "defined", "overridden")]
    assert (one.keep_completed, one.keep_failed) == (0.0, None)
    assert (defined.keep_completed, defined.keep_failed) == (60.0, 600.0)
    assert (overridden.keep_completed, overridden.keep_failed) == (60.0, 2 * 86400.0)


async def test_sqlite_connection_carries_the_retention(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    async with Queue.from_url(f"sqlite:///{db}") as queue:
        conn = sqlite3.connect(db)
        try:
            await _enqueue_three(queue, conn)
            conn.commit()
        finally:
            conn.close()
        await _check_three(queue)


@pytest.fixture
async def pg_queue(postgres_base_url: str) -> AsyncIterator[Queue]:
    url = postgres_test_url(postgres_base_url)
    try:
        async with Queue.from_url(url) as q:
            yield q
    finally:
        drop_test_schema(url)


@pytest.mark.parametrize("kind_name", ["psycopg", "psycopg-async"])
async def test_postgres_connection_carries_the_retention(
    pg_queue: Queue, postgres_base_url: str, kind_name: str
) -> None:
    kind = make_kind(kind_name, postgres_base_url)
    conn = await kind.open()
    try:
        await _enqueue_three(pg_queue, conn)
        await kind.commit(conn)
    finally:
        await kind.close(conn)
    await _check_three(pg_queue)


async def test_the_outbox_refuses_a_retention_before_writing(
    redis_base_url: str, tmp_path: Path
) -> None:
    outbox = f"sqlite:///{tmp_path / 'app.db'}"
    outbox_for_url(outbox).ensure_schema()
    async with Queue.from_url(redis_test_url(redis_base_url), outbox=outbox) as queue:
        conn = sqlite3.connect(tmp_path / "app.db")
        try:
            with pytest.raises(InvalidArgument, match="outbox does not carry a retention"):
                await queue.enqueue(
                    send_invite, Invite(email="a@x"), keep_completed=10, connection=conn
                )
            with pytest.raises(InvalidArgument, match="keep_completed / keep_failed"):
                await queue.enqueue(kept_invite, Invite(email="b@x"), connection=conn)
            assert not conn.in_transaction
            # Without one, the same connection writes the job.
            await queue.enqueue(send_invite, Invite(email="c@x"), connection=conn)
            assert conn.in_transaction
            conn.rollback()
        finally:
            conn.close()
