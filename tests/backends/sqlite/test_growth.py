"""A SQLite file that churns jobs stops growing: free pages are reused, and maintenance gives
back to the file system what a drained backlog left beyond a bounded reserve."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conveyor.backends.sqlite import SQLiteDriver
from conveyor.backends.sqlite._connection import VACUUM_KEEP_FREE_PAGES, VACUUM_STEP_PAGES
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    NewJob,
    Retention,
    TransitionKind,
    TransitionStatus,
)

T0 = 1_000_000.0
ROUND = 5_000  # jobs per round: a backlog of several MiB, far beyond the kept reserve
BATCH = 500
PAYLOAD = b'{"text": "' + b"x" * 300 + b'"}'


def _pages(path: Path) -> tuple[int, int, int]:
    """(page count, free pages, auto_vacuum mode) as a fresh connection reads them."""
    with sqlite3.connect(path) as conn:
        count, free, mode = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "auto_vacuum")
        )
    return count, free, mode


async def _churn_round(driver: SQLiteDriver, start: int, now: float) -> None:
    """Enqueue a backlog of ROUND jobs, then lease and complete every one (default retention:
    the newest 1,000 completed jobs are kept)."""
    for first in range(start, start + ROUND, BATCH):
        jobs = [
            NewJob(id=f"j{i}", queue="q", name="churn", payload=PAYLOAD)
            for i in range(first, first + BATCH)
        ]
        await driver.job_insert_many(jobs, now=now)
    params = FetchParams(("q",), BATCH, "w", 30.0)
    done = 0
    while done < ROUND:
        leased = await driver.job_fetch(params, now=now)
        assert leased, f"only {done} of {ROUND} jobs were leased"
        finishes = [
            FinishJob(job.id, job.lease_token or "", TransitionKind.COMPLETE, result=b"1")
            for job in leased
        ]
        results = await driver.job_finish_many(finishes, retention=Retention(), now=now)
        assert {r.status for r in results} == {TransitionStatus.OK}
        done += len(leased)


async def _maintain(driver: SQLiteDriver, now: float) -> None:
    """Maintenance ticks until a tick gives nothing more back (bounded: each gives back at most
    VACUUM_STEP_PAGES pages, and the file cannot hold more pages than it has)."""
    for _ in range(1_000):
        before = _pages(Path(driver.path))[0]
        await driver.job_prune_finished(Retention(), limit=1_000, now=now)
        if _pages(Path(driver.path))[0] == before:
            return
    raise AssertionError("maintenance kept giving pages back for 1,000 ticks")


async def test_a_churning_file_stops_growing(tmp_path: Path) -> None:
    path = tmp_path / "churn.db"
    driver = SQLiteDriver(f"sqlite:///{path}")
    await driver.open()
    try:
        sizes: list[int] = []
        peaks: list[int] = []
        for n in range(3):
            now = T0 + n * 100
            await _churn_round(driver, n * ROUND, now)
            peaks.append(_pages(path)[0])
            await _maintain(driver, now)
            count, free, mode = _pages(path)
            assert mode == 2, "a new file must be made with auto_vacuum = INCREMENTAL"
            # What a drained backlog freed went back, down to the reserve kept for reuse.
            assert free <= max(VACUUM_KEEP_FREE_PAGES, (count - free) // 4) + 1, (count, free)
            sizes.append(count)
        # The backlog's peak pages were well above the reserve: the test measures something.
        assert peaks[0] > sizes[0] + VACUUM_STEP_PAGES, (peaks, sizes)
        # From the second round on (the first starts without the 1,000 completed jobs kept),
        # the same churn needs no more pages than the round before.
        assert sizes[2] <= sizes[1] * 1.05 + 8, sizes
        assert peaks[2] <= peaks[1] * 1.05 + 8, peaks
        print(f"pages after each round: {sizes}; at each backlog's peak: {peaks}")
    finally:
        await driver.close()


async def test_a_file_made_before_auto_vacuum_keeps_working(tmp_path: Path) -> None:
    """An existing file without auto-vacuum reuses its free pages; maintenance leaves it be."""
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()  # made by hand: page_count 0, so still turned on...
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE made_before (x)")  # ...unless a table exists already
    driver = SQLiteDriver(f"sqlite:///{path}")
    await driver.open()
    try:
        await _churn_round(driver, 0, T0)
        await driver.job_prune_finished(Retention(), limit=1_000, now=T0)
        _, free, mode = _pages(path)
        assert mode == 0
        assert free > VACUUM_KEEP_FREE_PAGES  # nothing given back, nothing broken
    finally:
        await driver.close()
