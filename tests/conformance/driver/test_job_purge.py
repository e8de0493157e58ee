"""job_purge: delete jobs by state, queue and finish time."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobState, PurgeParams, TransitionKind

from ._support import T0, exists, fetch, finish, insert


async def _finished_set(driver: Driver) -> None:
    """f1 (failed at T0), f2 (failed at T0+10, queue other), ok (completed), c (cancelled)."""
    await insert(driver, "f1", "ok", now=T0)
    await insert(driver, "f2", queue="other", now=T0)
    await insert(driver, "c", "waiting", now=T0)
    f1, ok = await fetch(driver, limit=2)
    [f2] = await fetch(driver, queues=("other",))
    await finish(driver, f1, TransitionKind.FAIL, error="x", now=T0)
    await finish(driver, f2, TransitionKind.FAIL, error="x", now=T0 + 10)
    await finish(driver, ok, now=T0)
    await driver.job_cancel_many(["c"], now=T0)


async def test_default_purges_failed_jobs_only(driver: Driver) -> None:
    await _finished_set(driver)
    assert await driver.job_purge(PurgeParams(), now=T0 + 20) == 2
    alive = [i for i in ("f1", "f2", "ok", "c", "waiting") if await exists(driver, i)]
    assert alive == ["ok", "c", "waiting"]


async def test_purge_filters_by_queue_states_and_finish_time(driver: Driver) -> None:
    await _finished_set(driver)
    assert await driver.job_purge(PurgeParams(queue="other"), now=T0) == 1
    assert not await exists(driver, "f2") and await exists(driver, "f1")
    assert await driver.job_purge(PurgeParams(finished_before=T0), now=T0) == 0
    assert await driver.job_purge(PurgeParams(finished_before=T0 + 0.5), now=T0) == 1
    states = (JobState.COMPLETED, JobState.CANCELLED)
    assert await driver.job_purge(PurgeParams(states=states), now=T0) == 2
    assert [i for i in ("ok", "c", "waiting") if await exists(driver, i)] == ["waiting"]


async def test_finished_before_never_matches_unfinished_jobs(driver: Driver) -> None:
    await insert(driver, "q", now=T0)
    params = PurgeParams(states=(JobState.QUEUED,), finished_before=T0 + 100)
    assert await driver.job_purge(params, now=T0) == 0
    assert await driver.job_purge(PurgeParams(states=(JobState.QUEUED,)), now=T0) == 1


async def test_no_states_purges_nothing(driver: Driver) -> None:
    await _finished_set(driver)
    assert await driver.job_purge(PurgeParams(states=()), now=T0) == 0
