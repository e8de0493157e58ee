"""job_expired and job_rescue_many: the rescuer finds expired leases, the core decides (see
``conveyor.core.rescue``), and the driver applies each decision fenced by the token it saw."""

from __future__ import annotations

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    JobState,
    Lease,
    RescueJob,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
)

from ._support import LEASE, T0, fetch, fetch_one, finish, get, insert, rescue

OK = TransitionStatus.OK
LOST = TransitionStatus.LEASE_LOST


async def test_expired_lists_only_expired_leases_oldest_first(driver: Driver) -> None:
    await insert(driver, "a", "b", "c", now=T0)
    await fetch(driver, limit=1, now=T0 + 2)  # a expires last
    await fetch(driver, limit=2, now=T0)  # b, c
    assert await driver.job_expired(limit=10, now=T0 + LEASE - 0.001) == []
    assert [j.id for j in await driver.job_expired(limit=10, now=T0 + LEASE)] == ["b", "c"]
    expired = await driver.job_expired(limit=2, now=T0 + 100)
    assert [j.id for j in expired] == ["b", "c"]
    assert all(j.state is JobState.ACTIVE and j.lease_token for j in expired)
    assert await driver.job_expired(limit=0, now=T0 + 100) == []


async def test_live_lease_is_not_rescued(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert await rescue(driver, now=T0 + LEASE - 0.001) == {"requeue": [], "fail": [], "cancel": []}
    assert await get(driver, "a") == job


async def test_expired_lease_is_requeued_with_the_attempt_given_back(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    await fetch_one(driver)
    assert (await rescue(driver, now=T0 + LEASE))["requeue"] == ["a"]
    job = await get(driver, "a")
    assert (job.state, job.attempt, job.stalls) == (JobState.QUEUED, 0, 1)
    assert (job.lease_token, job.lease_expires_at, job.worker_id) == (None, None, None)
    assert job.run_at == T0 + LEASE
    assert job.error is not None and job.error.startswith("WorkerLost")
    assert [(e.attempt, e.at) for e in job.errors] == [(1, T0 + LEASE)]
    again = await fetch_one(driver, now=T0 + LEASE)
    assert (again.attempt, again.stalls) == (1, 1)


async def test_only_losses_while_running_alone_count_against_a_job(driver: Driver) -> None:
    """The first loss may be a neighbour's fault; later losses of the job marked isolated (it
    runs alone) are evidence, and past max_stalls it fails as a poison pill."""
    await insert(driver, "poison", now=T0)
    now = T0
    await fetch_one(driver, now=now)
    now += LEASE
    assert (await rescue(driver, now=now, max_stalls=2))["requeue"] == ["poison"]
    for stalls in (2, 3):
        job = await fetch_one(driver, now=now)
        assert job.lease_token is not None
        extended = await driver.job_extend_leases(
            [Lease(job.id, job.lease_token, job.queue, isolated=True)], LEASE, now=now
        )
        assert extended.lost == ()
        assert (await get(driver, "poison")).isolated
        now += LEASE
        done = await rescue(driver, now=now, max_stalls=2)
        assert (await get(driver, "poison")).stalls == stalls
        if stalls == 2:
            assert done["requeue"] == ["poison"]
    assert done["fail"] == ["poison"]
    job = await get(driver, "poison")
    assert (job.state, job.finished_at, job.lease_token) == (JobState.FAILED, now, None)
    assert job.error is not None and "max_stalls=2" in job.error


async def test_a_job_lost_with_neighbours_is_never_failed_for_it(driver: Driver) -> None:
    await insert(driver, "healthy", now=T0)
    now = T0
    for stalls in (1, 2, 3, 4):
        await fetch_one(driver, now=now)
        now += LEASE
        assert (await rescue(driver, now=now, max_stalls=0))["requeue"] == ["healthy"]
        assert (await get(driver, "healthy")).stalls == stalls


async def test_fetching_clears_the_isolated_mark(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert job.lease_token is not None and not job.isolated
    await driver.job_extend_leases([Lease("a", job.lease_token, isolated=True)], LEASE, now=T0)
    await finish(driver, job, TransitionKind.REQUEUE)
    assert not (await get(driver, "a")).isolated
    assert not (await fetch_one(driver)).isolated


async def test_expired_job_with_a_cancel_request_is_cancelled_not_requeued(driver: Driver) -> None:
    await insert(driver, "a", "b", now=T0)
    await fetch(driver)
    await driver.job_cancel_many(["a"], now=T0 + 1)
    done = await rescue(driver, now=T0 + LEASE)
    assert (done["requeue"], done["cancel"]) == (["b"], ["a"])
    job = await get(driver, "a")
    assert (job.state, job.finished_at, job.stalls) == (JobState.CANCELLED, T0 + LEASE, 1)
    assert job.error is not None and job.error.startswith("cancelled")
    assert (job.lease_token, job.lease_expires_at, job.worker_id) == (None, None, None)
    assert job.cancel_requested is False
    assert [j.id for j in await fetch(driver, now=T0 + 1000)] == ["b"]


async def test_cancel_wins_over_a_requeue_decided_before_it_landed(driver: Driver) -> None:
    """The rule checked inside the write: a cancel that lands between the rescuer's decision
    and its write still wins."""
    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    assert job.lease_token is not None
    decision = RescueJob(
        "a", job.lease_token, TransitionKind.REQUEUE, 1, "WorkerLost: x", "default"
    )
    await driver.job_cancel_many(["a"], now=T0 + 1)
    assert await driver.job_rescue_many([decision], now=T0 + LEASE) == [TransitionResult("a", OK)]
    cancelled = await get(driver, "a")
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.error is not None and cancelled.error.startswith("cancelled")


async def test_a_decision_is_fenced_by_the_token_and_the_expiry(driver: Driver) -> None:
    await insert(driver, "a", "b", now=T0)
    a, b = await fetch(driver)
    assert a.lease_token and b.lease_token
    renewed = await driver.job_extend_leases([Lease("b", b.lease_token)], LEASE, now=T0 + 20)
    assert renewed.lost == ()
    decisions = [
        RescueJob("a", "stale", TransitionKind.REQUEUE, 1, "e", "default"),
        RescueJob("b", b.lease_token, TransitionKind.REQUEUE, 1, "e", "default"),
        RescueJob("ghost", "t", TransitionKind.FAIL, 1, "e", "default"),
    ]
    results = await driver.job_rescue_many(decisions, now=T0 + LEASE)
    assert [(r.job_id, r.status) for r in results] == [
        ("a", LOST),
        ("b", LOST),  # renewed meanwhile: not expired any more
        ("ghost", TransitionStatus.NOT_FOUND),
    ]
    assert [await get(driver, "a"), (await get(driver, "b")).state] == [a, JobState.ACTIVE]


async def test_a_late_finish_of_a_rescued_attempt_is_refused(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    old = await fetch_one(driver)
    await rescue(driver, now=T0 + LEASE)
    assert (await finish(driver, old, result=b"late")).status is LOST
    new = await fetch_one(driver, now=T0 + LEASE + 1, worker_id="worker-2")
    assert (await finish(driver, old, TransitionKind.FAIL, error="late")).status is LOST
    assert await get(driver, "a") == new


async def test_a_rescue_batch_with_an_invalid_decision_writes_nothing(driver: Driver) -> None:
    await insert(driver, "a", "b", now=T0)
    a, b = await fetch(driver)
    assert a.lease_token and b.lease_token
    decisions = [
        RescueJob("a", a.lease_token, TransitionKind.REQUEUE, 1, "e", "default"),
        RescueJob("b", b.lease_token, TransitionKind.COMPLETE, 1, "e", "default"),
    ]
    with pytest.raises(InvalidArgument, match="'b'"):
        await driver.job_rescue_many(decisions, now=T0 + LEASE)
    assert [await get(driver, "a"), await get(driver, "b")] == [a, b]


async def test_waiting_and_finished_jobs_are_never_expired(driver: Driver) -> None:
    await insert(driver, "queued", now=T0)
    await insert(driver, "scheduled", delay=10, now=T0)
    await insert(driver, "done", queue="other", now=T0)
    await finish(driver, await fetch_one(driver, queues=("other",)))
    assert await driver.job_expired(limit=10, now=T0 + 10_000) == []
