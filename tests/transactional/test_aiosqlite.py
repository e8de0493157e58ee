"""``enqueue(..., connection=...)`` with aiosqlite, the asyncio driver of SQLite: a SQLAlchemy
``AsyncSession`` on ``sqlite+aiosqlite://`` or an ``aiosqlite.Connection`` writes the job in the
caller's transaction, as a sqlite3 connection does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from conveyor import InvalidArgument, JobState, Queue
from tests.transactional.helpers import Invite, drain, send_invite


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture
async def queue(db_path: Path) -> AsyncIterator[Queue]:
    q = Queue.from_url(f"sqlite:///{db_path}")
    await q.connect()
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
async def engine(queue: Queue, db_path: Path) -> AsyncIterator[AsyncEngine]:
    e = create_async_engine(f"sqlite+aiosqlite:///{db_path}")
    async with e.begin() as conn:
        await conn.execute(text("CREATE TABLE invitation (email TEXT PRIMARY KEY)"))
    try:
        yield e
    finally:
        await e.dispose()


async def test_an_async_session_commits_the_job_with_its_rows(
    queue: Queue, engine: AsyncEngine
) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await session.execute(text("INSERT INTO invitation VALUES ('ada@example.com')"))
        handle = await queue.enqueue(
            send_invite, Invite(email="ada@example.com"), job_id="invite:ada", connection=session
        )
        assert not handle.duplicate
        assert await queue.get("invite:ada") is None, "seen before the caller committed"
    info = await queue.get("invite:ada")
    assert info is not None and info.state is JobState.QUEUED
    assert await drain(queue) == ["ada@example.com"]


async def test_an_async_session_that_rolls_back_leaves_no_job(
    queue: Queue, engine: AsyncEngine
) -> None:
    async with async_sessionmaker(engine)() as session:
        await queue.enqueue(
            send_invite, Invite(email="bob@example.com"), job_id="invite:bob", connection=session
        )
        await session.rollback()
    assert await queue.get("invite:bob") is None
    assert await queue.list_jobs() == []


async def test_an_aiosqlite_connection_writes_in_its_transaction(
    queue: Queue, db_path: Path
) -> None:
    async with aiosqlite.connect(db_path) as conn:
        await queue.enqueue(send_invite, Invite(email="a@example.com"), job_id="a", connection=conn)
        assert conn.in_transaction
        await conn.rollback()
        assert await queue.get("a") is None
        await queue.enqueue(send_invite, Invite(email="b@example.com"), job_id="b", connection=conn)
        await conn.commit()
    assert [job.id for job in await queue.list_jobs()] == ["b"]


async def test_an_aiosqlite_connection_in_autocommit_mode_is_refused(
    queue: Queue, db_path: Path
) -> None:
    async with aiosqlite.connect(db_path, isolation_level=None) as conn:
        with pytest.raises(InvalidArgument, match="autocommit mode outside a transaction"):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
    assert await queue.list_jobs() == []


async def test_an_aiosqlite_connection_to_another_file_is_refused(
    queue: Queue, tmp_path: Path
) -> None:
    async with aiosqlite.connect(tmp_path / "other.db") as conn:
        with pytest.raises(InvalidArgument):
            await queue.enqueue(send_invite, Invite(email="a@example.com"), connection=conn)
        await conn.rollback()
    assert await queue.list_jobs() == []
