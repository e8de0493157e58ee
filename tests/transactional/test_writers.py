"""Which writer takes ``enqueue(..., connection=conn)``: the queue's SQL backend, else its
outbox, else a clear error before anything is written."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from conveyor import InvalidArgument, Queue, SyncQueue
from conveyor.backends.registry import driver_for_url
from conveyor.drivers.transactional import TransactionalWriter
from conveyor.engine import Engine
from tests.conftest import redis_test_url
from tests.transactional.helpers import Invite, send_invite


def test_the_engine_exposes_the_writer_of_sql_backends_only(tmp_path: Path) -> None:
    sqlite_engine = Engine(driver_for_url(f"sqlite:///{tmp_path / 'q.db'}"))
    writer = sqlite_engine.transactional_writer()
    assert isinstance(writer, TransactionalWriter) and writer.dialect == "sqlite"
    assert Engine(driver_for_url("memory://writers")).transactional_writer() is None


async def test_a_redis_queue_without_an_outbox_is_refused(
    redis_base_url: str, tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        async with Queue.from_url(redis_test_url(redis_base_url)) as queue:
            assert queue.driver.transactional_writer() is None
            with pytest.raises(InvalidArgument) as caught:
                await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
            assert str(caught.value) == (
                "connection= needs a SQL backend (sqlite://, postgresql://) or an outbox, and "
                "this queue is on redis://: "
                "Queue.from_url('redis://...', outbox='postgresql://...')"
            )
            assert await queue.list_jobs() == []
        assert not conn.in_transaction
    finally:
        conn.close()


def test_sync_queue_refuses_the_same_way(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        with SyncQueue.from_url(f"memory://{uuid.uuid4().hex}") as sync_queue:
            with pytest.raises(InvalidArgument, match="needs a SQL backend"):
                sync_queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
            with pytest.raises(InvalidArgument, match="needs a SQL backend"):
                sync_queue.enqueue_by_name("txn.send_invite", {"email": "b"}, connection=conn)
            assert sync_queue.list_jobs() == []
        assert not conn.in_transaction
    finally:
        conn.close()
