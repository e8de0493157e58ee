"""job_prune_finished: age- and count-based retention, bounded per call."""

from __future__ import annotations

import pytest

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobState, Retention, TransitionKind

from ._support import T0, exists, fetch, finish, insert

DAY = 24 * 3600.0
KEEP_ALL = Retention(completed_max_count=None, cancelled_max_age=None)


async def _complete(driver: Driver, *ids: str, at: float, queue: str = "default") -> None:
    await insert(driver, *ids, queue=queue, now=at)
    for job in await fetch(driver, queues=(queue,), now=at, limit=len(ids)):
        await finish(driver, job, now=at, retention=KEEP_ALL)


async def test_completed_jobs_older_than_max_age_are_deleted(driver: Driver) -> None:
    await _complete(driver, "old", at=T0)
    await _complete(driver, "new", at=T0 + 2 * DAY)
    retention = Retention(completed_max_count=None, completed_max_age=DAY)
    assert await driver.job_prune_finished(retention, limit=100, now=T0 + DAY + 1) == 1
    assert not await exists(driver, "old") and await exists(driver, "new")


async def test_failed_jobs_are_kept_by_default_and_cancelled_for_a_week(driver: Driver) -> None:
    await insert(driver, "failed", "cancelled", now=T0)
    [job] = await fetch(driver, limit=1)
    await finish(driver, job, TransitionKind.FAIL, error="x")
    await driver.job_cancel_many(["cancelled"], now=T0)
    assert await driver.job_prune_finished(Retention(), limit=100, now=T0 + 7 * DAY - 1) == 0
    assert await driver.job_prune_finished(Retention(), limit=100, now=T0 + 365 * DAY) == 1
    assert await exists(driver, "failed") and not await exists(driver, "cancelled")
    failed_week = Retention(failed_max_age=7 * DAY)
    assert await driver.job_prune_finished(failed_week, limit=100, now=T0 + 365 * DAY) == 1


async def test_unfinished_jobs_are_never_pruned(driver: Driver) -> None:
    await insert(driver, "q", now=T0)
    await insert(driver, "s", delay=10, now=T0)
    await insert(driver, "a", now=T0)
    everything = Retention(
        completed_max_count=0, completed_max_age=0, failed_max_age=0, cancelled_max_age=0
    )
    assert await driver.job_prune_finished(everything, limit=100, now=T0 + 365 * DAY) == 0


async def test_count_retention_keeps_the_newest_per_queue(driver: Driver) -> None:
    for n in range(4):
        await _complete(driver, f"d{n}", at=T0 + n)
        await _complete(driver, f"o{n}", at=T0 + n, queue="other")
    removed = await driver.job_prune_finished(
        Retention(completed_max_count=1), limit=100, now=T0 + 10
    )
    assert removed == 6
    alive = [i for n in range(4) for i in (f"d{n}", f"o{n}") if await exists(driver, i)]
    assert alive == ["d3", "o3"]


async def test_prune_is_bounded_by_limit_oldest_first(driver: Driver) -> None:
    for n in range(5):
        await _complete(driver, f"j{n}", at=T0 + n)
    by_age = Retention(completed_max_count=None, completed_max_age=0.5)
    assert await driver.job_prune_finished(by_age, limit=2, now=T0 + 100) == 2
    assert [await exists(driver, f"j{n}") for n in range(5)] == [False, False, True, True, True]
    by_count = Retention(completed_max_count=0)
    assert await driver.job_prune_finished(by_count, limit=2, now=T0 + 100) == 2
    assert [await exists(driver, f"j{n}") for n in range(5)] == [False] * 4 + [True]
    assert await driver.job_prune_finished(by_count, limit=2, now=T0 + 100) == 1
    assert (await driver.job_count_by_state())[JobState.COMPLETED] == 0


async def test_age_and_count_share_one_limit(driver: Driver) -> None:
    for n in range(3):
        await _complete(driver, f"j{n}", at=T0 + n)
    await insert(driver, "c", now=T0)
    await driver.job_cancel_many(["c"], now=T0)
    retention = Retention(completed_max_count=0, cancelled_max_age=1)
    assert await driver.job_prune_finished(retention, limit=3, now=T0 + 100) == 3
    assert not await exists(driver, "c")
    assert [await exists(driver, f"j{n}") for n in range(3)] == [False, False, True]


@pytest.mark.parametrize("limit", [0, -1])
async def test_non_positive_limit_prunes_nothing(driver: Driver, limit: int) -> None:
    await _complete(driver, "a", "b", "c", at=T0)
    retention = Retention(completed_max_count=1, completed_max_age=DAY)
    assert await driver.job_prune_finished(retention, limit=limit, now=T0 + 2 * DAY) == 0
    assert [await exists(driver, i) for i in "abc"] == [True, True, True]
