"""job_rescue_expired: expired leases go back to the queue, counting stalls, or fail."""

from __future__ import annotations

import pytest

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobState, RescueResult

from ._support import LEASE, T0, fetch, fetch_one, get, insert


async def test_live_lease_is_not_rescued(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    result = await driver.job_rescue_expired(max_stalls=3, limit=10, now=T0 + LEASE - 0.001)
    assert result == RescueResult((), ())
    assert await get(driver, "a") == job


async def test_expired_lease_is_requeued_with_the_attempt_given_back(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await fetch_one(driver)
    result = await driver.job_rescue_expired(max_stalls=3, limit=10, now=T0 + LEASE)
    assert result == RescueResult(("a",), ())
    job = await get(driver, "a")
    assert (job.state, job.attempt, job.stalls) == (JobState.QUEUED, 0, 1)
    assert (job.lease_token, job.lease_expires_at, job.worker_id) == (None, None, None)
    assert job.run_at == T0 + LEASE
    assert (await fetch_one(driver, now=T0 + LEASE)).attempt == 1


async def test_stalls_accumulate_and_the_job_fails_after_max_stalls(driver: Driver) -> None:
    await insert(driver, "poison", now=T0)
    now = T0
    for stall in (1, 2):
        await fetch_one(driver, now=now)
        now += LEASE
        result = await driver.job_rescue_expired(max_stalls=2, limit=10, now=now)
        assert result == RescueResult(("poison",), ())
        assert (await get(driver, "poison")).stalls == stall
    await fetch_one(driver, now=now)
    now += LEASE
    result = await driver.job_rescue_expired(max_stalls=2, limit=10, now=now)
    assert result == RescueResult((), ("poison",))
    job = await get(driver, "poison")
    assert (job.state, job.stalls, job.finished_at) == (JobState.FAILED, 3, now)
    assert job.error is not None and "max_stalls=2" in job.error
    assert job.lease_token is None


async def test_max_stalls_zero_fails_on_the_first_stall(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await fetch_one(driver)
    result = await driver.job_rescue_expired(max_stalls=0, limit=10, now=T0 + LEASE)
    assert result == RescueResult((), ("a",))


async def test_limit_takes_the_oldest_leases_first(driver: Driver) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    await fetch(driver, limit=1, now=T0 + 2)  # a expires last
    await fetch(driver, limit=2, now=T0)  # b, c
    result = await driver.job_rescue_expired(max_stalls=3, limit=2, now=T0 + 100)
    assert result.requeued == ("b", "c")
    result = await driver.job_rescue_expired(max_stalls=3, limit=2, now=T0 + 100)
    assert result.requeued == ("a",)


async def test_waiting_and_finished_jobs_are_untouched(driver: Driver) -> None:
    await insert(driver, "queued", now=T0)
    await insert(driver, "scheduled", delay=10, now=T0)
    before = [await get(driver, i) for i in ("queued", "scheduled")]
    result = await driver.job_rescue_expired(max_stalls=3, limit=10, now=T0 + 10_000)
    assert result == RescueResult((), ())
    assert [await get(driver, i) for i in ("queued", "scheduled")] == before


async def test_expired_job_with_a_cancel_request_is_cancelled_not_requeued(driver: Driver) -> None:
    await insert(driver, "a", "b", now=T0)
    await fetch(driver)
    await driver.job_cancel_many(["a"], now=T0 + 1)
    result = await driver.job_rescue_expired(max_stalls=3, limit=10, now=T0 + LEASE)
    assert result == RescueResult(("b",), (), ("a",))
    job = await get(driver, "a")
    assert (job.state, job.finished_at, job.stalls) == (JobState.CANCELLED, T0 + LEASE, 1)
    assert job.error is not None and job.error.startswith("cancelled")
    assert (job.lease_token, job.lease_expires_at, job.worker_id) == (None, None, None)
    assert job.cancel_requested is False
    assert [j.id for j in await fetch(driver, now=T0 + 1000)] == ["b"]


async def test_cancel_request_wins_over_failing_after_max_stalls(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await fetch_one(driver)
    await driver.job_cancel_many(["a"], now=T0)
    result = await driver.job_rescue_expired(max_stalls=0, limit=10, now=T0 + LEASE)
    assert result == RescueResult((), (), ("a",))
    assert (await get(driver, "a")).state is JobState.CANCELLED


@pytest.mark.parametrize("limit", [0, -1])
async def test_non_positive_limit_rescues_nothing(driver: Driver, limit: int) -> None:
    await insert(driver, "a", "b", now=T0)
    jobs = await fetch(driver)
    result = await driver.job_rescue_expired(max_stalls=3, limit=limit, now=T0 + LEASE)
    assert result == RescueResult((), ())
    assert [await get(driver, i) for i in "ab"] == jobs
