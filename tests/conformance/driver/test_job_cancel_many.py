"""job_cancel_many: waiting jobs are cancelled, active ones are asked to stop."""

from __future__ import annotations

import pytest

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    JobState,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
)

from ._support import T0, fetch, fetch_one, finish, get, insert


async def test_waiting_jobs_are_cancelled(driver: Driver) -> None:
    await insert(driver, "r", now=T0)
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.RETRY, delay=5, error="e")
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


@pytest.mark.parametrize(
    "kind", [TransitionKind.RETRY, TransitionKind.SNOOZE, TransitionKind.REQUEUE]
)
async def test_cancel_request_wins_over_a_finish_that_would_run_the_job_again(
    driver: Driver, kind: TransitionKind
) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    await driver.job_cancel_many(["a"], now=T0 + 1)
    result = await finish(driver, job, kind, delay=3, error="timeout", now=T0 + 2)
    assert result == TransitionResult("a", TransitionStatus.OK)
    cancelled = await get(driver, "a")
    assert (cancelled.state, cancelled.finished_at) == (JobState.CANCELLED, T0 + 2)
    assert cancelled.error is not None and cancelled.error.startswith("cancelled")
    assert (cancelled.lease_expires_at, cancelled.worker_id) == (None, None)
    assert cancelled.cancel_requested is False
    assert await driver.job_promote_due(limit=10, now=T0 + 1000) == 0
    assert await fetch(driver, now=T0 + 1000) == []


async def test_cancel_request_keeps_the_given_retry_error_after_the_prefix(
    driver: Driver,
) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    await driver.job_cancel_many(["a"], now=T0)
    await finish(driver, job, TransitionKind.RETRY, delay=5, error="timeout")
    assert (await get(driver, "a")).error == "cancelled: timeout"


async def test_cancel_request_does_not_change_complete_or_fail(driver: Driver) -> None:
    await insert(driver, "done", "bad", now=T0)
    done, bad = await fetch(driver)
    await driver.job_cancel_many(["done", "bad"], now=T0)
    assert (await finish(driver, done, result=b'"ok"', now=T0 + 1)).status == "ok"
    assert (await finish(driver, bad, TransitionKind.FAIL, error="boom")).status == "ok"
    completed, failed = await get(driver, "done"), await get(driver, "bad")
    assert (completed.state, completed.result) == (JobState.COMPLETED, b'"ok"')
    assert (failed.state, failed.error) == (JobState.FAILED, "boom")
    assert not completed.cancel_requested and not failed.cancel_requested


async def test_requeue_without_a_cancel_request_still_runs_again(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.REQUEUE)
    assert (await get(driver, "a")).state is JobState.QUEUED
    assert (await fetch_one(driver)).cancel_requested is False


async def test_cancelled_queued_jobs_leave_the_rest_in_order_and_counted(driver: Driver) -> None:
    """Cancelling queued jobs anywhere in a queue (a backend may leave a marker where they were
    rather than search for them) changes neither the order of the others nor any count."""
    ids = [f"j{n:02}" for n in range(30)]
    await insert(driver, *ids, now=T0)
    await insert(driver, "urgent", priority=-1, now=T0)
    doomed = ["j00", "j07", "j08", "j15", "j29", "urgent"]
    results = await driver.job_cancel_many(doomed, now=T0 + 1)
    assert {r.status for r in results} == {ChangeStatus.OK}
    counts = await driver.job_count_by_state("default")
    assert (counts[JobState.QUEUED], counts[JobState.CANCELLED]) == (25, 6)
    fetched = [j.id for j in await fetch(driver, limit=100, now=T0 + 2)]
    assert fetched == [i for i in ids if i not in doomed]
    assert {(await get(driver, i)).state for i in doomed} == {JobState.CANCELLED}


async def test_a_cancelled_job_retried_runs_once_in_its_new_place(driver: Driver) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    await driver.job_cancel_many(["a"], now=T0)
    await insert(driver, "d", now=T0 + 1)
    await driver.job_retry_many(["a"], now=T0 + 2)
    await insert(driver, "e", now=T0 + 3)
    fetched = [j.id for j in await fetch(driver, limit=10, now=T0 + 4)]
    assert fetched == ["b", "c", "d", "a", "e"]
    assert await fetch(driver, now=T0 + 5) == []
    counts = await driver.job_count_by_state()
    assert (counts[JobState.ACTIVE], counts[JobState.QUEUED]) == (5, 0)


async def test_purging_after_cancels_deletes_only_what_it_names(driver: Driver) -> None:
    from conveyor.drivers.records import PurgeParams

    await insert(driver, "a", "b", "c", now=T0)
    await driver.job_cancel_many(["b"], now=T0)
    assert await driver.job_purge(PurgeParams(states=(JobState.QUEUED,)), now=T0) == 2
    assert (await get(driver, "b")).state is JobState.CANCELLED
    assert await driver.job_purge(PurgeParams(states=(JobState.CANCELLED,)), now=T0) == 1
    assert sum((await driver.job_count_by_state()).values()) == 0


async def test_no_ids_is_a_no_op(driver: Driver) -> None:
    assert await driver.job_cancel_many([], now=T0) == []
