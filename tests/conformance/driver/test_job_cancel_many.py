"""job_cancel_many: waiting jobs are cancelled, active ones are asked to stop."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import ChangeResult, ChangeStatus, JobState, TransitionKind

from ._support import T0, fetch, fetch_one, finish, get, insert


async def test_waiting_jobs_are_cancelled(driver: Driver) -> None:
    await insert(driver, "r", now=T0)
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.RETRY, run_at=T0 + 5, error="e")
    await insert(driver, "q", now=T0)
    await insert(driver, "s", delay=60, now=T0)
    results = await driver.job_cancel_many(["q", "s", "r"], now=T0 + 1)
    assert results == [ChangeResult(i, ChangeStatus.OK, JobState.CANCELLED) for i in "qsr"]
    for job_id in "qsr":
        cancelled = await get(driver, job_id)
        assert (cancelled.state, cancelled.finished_at) == (JobState.CANCELLED, T0 + 1)
        assert cancelled.error == "cancelled"
    assert await fetch(driver, now=T0 + 1000) == []


async def test_active_job_only_gets_cancel_requested(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    results = await driver.job_cancel_many(["a"], now=T0 + 1)
    assert results == [ChangeResult("a", ChangeStatus.CANCEL_REQUESTED, JobState.ACTIVE)]
    active = await get(driver, "a")
    assert active.state is JobState.ACTIVE and active.cancel_requested
    assert active.lease_token == job.lease_token
    assert (await finish(driver, job, TransitionKind.CANCEL, error="stopped")).status == "ok"
    assert (await get(driver, "a")).cancel_requested is False


async def test_finished_jobs_are_wrong_state_and_unknown_ids_not_found(driver: Driver) -> None:
    await insert(driver, "done", "cancelled", now=T0)
    job = await fetch_one(driver)
    await finish(driver, job)
    await driver.job_cancel_many(["cancelled"], now=T0)
    results = await driver.job_cancel_many(["done", "cancelled", "ghost"], now=T0 + 1)
    assert results == [
        ChangeResult("done", ChangeStatus.WRONG_STATE, JobState.COMPLETED),
        ChangeResult("cancelled", ChangeStatus.WRONG_STATE, JobState.CANCELLED),
        ChangeResult("ghost", ChangeStatus.NOT_FOUND, None),
    ]
    assert (await get(driver, "cancelled")).finished_at == T0


async def test_requeued_active_job_forgets_the_cancel_request_on_refetch(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    await driver.job_cancel_many(["a"], now=T0)
    await finish(driver, job, TransitionKind.REQUEUE)
    assert (await get(driver, "a")).cancel_requested is False
    assert (await fetch_one(driver)).cancel_requested is False


async def test_no_ids_is_a_no_op(driver: Driver) -> None:
    assert await driver.job_cancel_many([], now=T0) == []
