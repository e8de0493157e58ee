"""A single enqueue from async code is written on the event loop's own thread when that costs
the loop no wait: not at ``synchronous=full`` (a commit waits for the disk), never waiting for a
write lock held elsewhere (the driver's thread waits instead, the loop keeps running), and
never growing the WAL without bound (it does not checkpoint; the driver's thread does)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from conveyor.backends.sqlite import SQLiteDriver
from conveyor.backends.sqlite._inline import THREAD_EVERY, InlineInserter
from conveyor.drivers.records import InsertStatus, JobState, NewJob

T0 = 1_700_000_000.0


def _job(job_id: str) -> NewJob:
    return NewJob(id=job_id, queue="q", name="n", payload=b"{}")


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[SQLiteDriver]:
    driver = SQLiteDriver(url)
    await driver.open()
    try:
        await driver.job_insert_many([_job("first")], now=T0)  # the queue is known
        yield driver
    finally:
        await driver.close()


@asynccontextmanager
async def _drivers_thread_held(driver: SQLiteDriver) -> AsyncIterator[None]:
    """Keep the driver's own thread busy until the block ends."""
    started, release = threading.Event(), threading.Event()

    def hold(_conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(30)

    held = asyncio.ensure_future(driver._db.run(hold))
    await asyncio.to_thread(started.wait, 10)
    try:
        yield
    finally:
        release.set()
        await held


async def _ticks_while(awaitable: asyncio.Future[object], seconds: float) -> tuple[bool, int]:
    """Whether ``awaitable`` finished within ``seconds``, and how often the loop ran meanwhile."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    done, _ = await asyncio.wait([awaitable], timeout=seconds)
    ticker.cancel()
    return bool(done), ticks


async def test_a_single_enqueue_is_written_on_the_loops_thread(tmp_path: Path) -> None:
    async with _opened(f"sqlite:///{tmp_path / 'db.sqlite'}") as driver:
        async with _drivers_thread_held(driver):
            [result] = await asyncio.wait_for(driver.job_insert_many([_job("a")], now=T0), 5)
        assert result.status is InsertStatus.INSERTED
        [job] = await driver.job_get_many(["a"])
        assert job is not None and job.state is JobState.QUEUED


async def test_at_synchronous_full_the_drivers_thread_writes_it(tmp_path: Path) -> None:
    async with _opened(f"sqlite:///{tmp_path / 'db.sqlite'}?synchronous=full") as driver:
        async with _drivers_thread_held(driver):
            enqueue = asyncio.ensure_future(driver.job_insert_many([_job("a")], now=T0))
            done, _ = await _ticks_while(enqueue, 0.3)
            assert not done  # waits for the driver's thread: the loop never waits for a fsync
        [result] = await asyncio.wait_for(enqueue, 10)
        assert result.status is InsertStatus.INSERTED


async def test_a_held_write_lock_leaves_the_loop_running(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with _opened(f"sqlite:///{path}") as driver:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            holder.execute("BEGIN IMMEDIATE")
            enqueue = asyncio.ensure_future(driver.job_insert_many([_job("a")], now=T0))
            done, ticks = await _ticks_while(enqueue, 0.3)
            assert not done  # waiting for the lock in the driver's thread, not failed
            assert ticks >= 5  # and not on the loop's thread: it kept running
            release = threading.Thread(target=lambda: holder.execute("COMMIT"))
            release.start()
            [result] = await asyncio.wait_for(enqueue, 10)
            release.join()
            assert result.status is InsertStatus.INSERTED
        finally:
            holder.close()


async def test_the_wal_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with _opened(f"sqlite:///{path}") as driver:
        page = await driver._db.run(lambda c: int(c.execute("PRAGMA page_size").fetchall()[0][0]))
        jobs = 30 * THREAD_EVERY
        for n in range(jobs):
            await driver.job_insert_many([_job(f"j{n}")], now=T0)
        wal = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
        # Each commit appends several pages; without the checkpoints of the driver's thread the
        # WAL would hold every one of them (~8 pages a job).
        assert wal < (1000 + 20 * THREAD_EVERY) * (page + 24), wal
        counts = await driver.job_count_by_state("q")
        assert counts[JobState.QUEUED] == jobs + 1


async def test_a_duplicate_id_is_still_reported(tmp_path: Path) -> None:
    async with _opened(f"sqlite:///{tmp_path / 'db.sqlite'}") as driver:
        [again] = await driver.job_insert_many([_job("first")], now=T0)
        assert (again.status, again.state) == (InsertStatus.DUPLICATE, JobState.QUEUED)


async def test_a_closed_driver_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with _opened(f"sqlite:///{path}") as driver:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        await driver.job_insert_many([_job("late")], now=T0)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM conveyor_job").fetchone() == (1,)


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM conveyor_job").fetchone()[0])


async def test_another_thread_or_a_forked_child_never_shares_the_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    async with _opened(f"sqlite:///{path}"):
        pass  # the schema exists, and queue "q" with it
    inline = InlineInserter(str(path), "normal")
    try:
        assert inline.insert(_job("here"), T0) is not None
        # Another thread of this process: the caller writes the job the usual way instead.
        elsewhere: list[object] = []
        thread = threading.Thread(target=lambda: elsewhere.append(inline.insert(_job("t"), T0)))
        thread.start()
        thread.join()
        assert elsewhere == [None]
        # A forked child opens a connection of its own, and the parent's still works after.
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child's outcome is its exit status)
            os._exit(0 if inline.insert(_job("child"), T0) is not None else 1)
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert inline.insert(_job("after"), T0) is not None
    finally:
        inline.close()
    assert _count(path) == 4  # first, here, child, after
