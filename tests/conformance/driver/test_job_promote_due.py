"""job_promote_due: due scheduled and retrying jobs become queued."""

from __future__ import annotations

import pytest

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobState, TransitionKind

from ._support import T0, fetch_one, finish, get, insert


async def test_due_scheduled_and_retrying_jobs_are_queued(driver: Driver) -> None:
    await insert(driver, "r", now=T0)
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.RETRY, delay=5, error="e")
    await insert(driver, "s", delay=5, now=T0)
    await insert(driver, "later", delay=50, now=T0)
    assert await driver.job_promote_due(limit=10, now=T0 + 4) == 0
    assert await driver.job_promote_due(limit=10, now=T0 + 5) == 2
    states = [(await get(driver, i)).state for i in ("r", "s", "later")]
    assert states == [JobState.QUEUED, JobState.QUEUED, JobState.SCHEDULED]
    retried = await get(driver, "r")
    assert (retried.attempt, retried.run_at, retried.error) == (1, T0 + 5, "e")


async def test_promotion_is_bounded_and_takes_the_earliest_first(driver: Driver) -> None:
    await insert(driver, "c", run_at=T0 + 3, now=T0)
    await insert(driver, "a", run_at=T0 + 1, now=T0)
    await insert(driver, "b", run_at=T0 + 2, now=T0)
    assert await driver.job_promote_due(limit=2, now=T0 + 10) == 2
    states = {i: (await get(driver, i)).state for i in "abc"}
    assert states == {"a": JobState.QUEUED, "b": JobState.QUEUED, "c": JobState.SCHEDULED}
    assert await driver.job_promote_due(limit=2, now=T0 + 10) == 1
    assert await driver.job_promote_due(limit=2, now=T0 + 10) == 0


async def test_queued_jobs_are_not_counted(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    assert await driver.job_promote_due(limit=10, now=T0 + 10) == 0


@pytest.mark.parametrize("limit", [0, -1])
async def test_non_positive_limit_promotes_nothing(driver: Driver, limit: int) -> None:
    await insert(driver, "a", "b", delay=5, now=T0)
    assert await driver.job_promote_due(limit=limit, now=T0 + 10) == 0
    assert [(await get(driver, i)).state for i in "ab"] == [JobState.SCHEDULED] * 2
