"""job_retry_many: failed and cancelled jobs go back to the queue with one more attempt."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    JobState,
    ListParams,
    RescueJob,
    TransitionKind,
)

from ._support import T0, fetch, fetch_one, finish, get, insert


async def test_failed_job_is_queued_with_one_more_attempt(driver: Driver) -> None:
    await insert(driver, "a", max_attempts=1, now=T0)
    await insert(driver, "b", now=T0)
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.FAIL, error="boom", now=T0 + 1)
    results = await driver.job_retry_many(["a"], now=T0 + 100)
    assert results == [ChangeResult("a", ChangeStatus.OK, JobState.QUEUED)]
    retried = await get(driver, "a")
    assert (retried.state, retried.attempt, retried.max_attempts) == (JobState.QUEUED, 1, 2)
    assert (retried.run_at, retried.finished_at, retried.stalls) == (T0 + 100, None, 0)
    assert retried.seq > job.seq and retried.seq > (await get(driver, "b")).seq
    listed = await driver.job_list(ListParams())
    assert [j.id for j in listed] == ["a", "b"]
    # b was enqueued earlier to run at T0; the retried job runs from its retry time
    assert [j.id for j in await fetch(driver, now=T0 + 100)] == ["b", "a"]
    assert (await get(driver, "a")).attempt == 2


async def test_stalled_out_job_can_be_retried_with_its_stalls_reset(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert job.lease_token is not None
    failure = RescueJob("a", job.lease_token, TransitionKind.FAIL, 3, "WorkerLost: x", "default")
    await driver.job_rescue_many([failure], now=T0 + 100)
    assert (await get(driver, "a")).state is JobState.FAILED
    await driver.job_retry_many(["a"], now=T0 + 200)
    assert (await get(driver, "a")).stalls == 0


async def test_cancelled_job_is_queued_again(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await driver.job_cancel_many(["a"], now=T0)
    assert (await driver.job_retry_many(["a"], now=T0 + 1))[0].status is ChangeStatus.OK
    retried = await get(driver, "a")
    assert (retried.state, retried.max_attempts) == (JobState.QUEUED, 1)


async def test_other_states_are_wrong_state_and_unknown_not_found(driver: Driver) -> None:
    await insert(driver, "active", "done", "queued", now=T0)
    active, done = await fetch(driver, limit=2)
    await finish(driver, done)
    results = await driver.job_retry_many(["active", "done", "queued", "ghost"], now=T0)
    assert results == [
        ChangeResult("active", ChangeStatus.WRONG_STATE, JobState.ACTIVE),
        ChangeResult("done", ChangeStatus.WRONG_STATE, JobState.COMPLETED),
        ChangeResult("queued", ChangeStatus.WRONG_STATE, JobState.QUEUED),
        ChangeResult("ghost", ChangeStatus.NOT_FOUND, None),
    ]
    assert await get(driver, "active") == active


async def test_retried_job_carries_no_cancel_request_into_its_next_run(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    await driver.job_cancel_many(["a"], now=T0)
    await finish(driver, job, TransitionKind.FAIL, error="boom")
    await driver.job_retry_many(["a"], now=T0 + 1)
    assert (await get(driver, "a")).cancel_requested is False
    again = await fetch_one(driver, now=T0 + 1)
    assert again.cancel_requested is False
    await finish(driver, again, TransitionKind.RETRY, delay=5, error="e")
    assert (await get(driver, "a")).state is JobState.RETRYING
