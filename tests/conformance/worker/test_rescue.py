"""At-least-once with fencing: dead workers' jobs are rescued, poison pills fail, and a worker
that lost its lease cannot overwrite the job."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conveyor import FakeClock, JobContext, JobState, Queue, Retention, job
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobRecord,
    TransitionKind,
    TransitionStatus,
)
from tests.conformance.worker.helpers import Harness, Num, get_info, wait_for, wait_state

work = job("test.work", Num, result=str)


async def lease_as_dead_worker(
    queue: Queue, clock: FakeClock, *, worker_id: str = "dead-worker", lease_seconds: float = 5
) -> JobRecord:
    """Claim the next job the way a worker does, then never touch it again (SIGKILL)."""
    records = await queue.driver.job_fetch(
        FetchParams(("default",), 1, worker_id, lease_seconds), now=clock.now()
    )
    assert len(records) == 1
    return records[0]


async def test_a_dead_workers_job_is_rescued_and_completed(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    attempts: list[int] = []
    worker = harness.worker()

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        attempts.append(ctx.attempt)
        return "rescued"

    handle_ = await queue.enqueue(work, Num(n=1))
    dead = await lease_as_dead_worker(queue, clock)
    assert dead.id == handle_.id
    assert dead.attempt == 1

    harness.start(worker)
    await harness.registered(worker)
    info = await get_info(queue, handle_.id)
    assert info.state is JobState.ACTIVE  # the lease has not expired: nobody touches it
    assert info.worker_id == "dead-worker"

    clock.advance(6)
    assert await handle_.result(timeout=10) == "rescued"
    info = await get_info(queue, handle_.id)
    assert info.stalls == 1
    assert info.attempt == 1  # the stalled attempt was given back
    assert attempts == [1]


async def test_a_job_that_keeps_stalling_fails(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    # This worker serves another queue, so it only does maintenance for the "default" one.
    worker = harness.worker(queues=["elsewhere"], max_stalls=1)
    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(worker)

    await lease_as_dead_worker(queue, clock, worker_id="dead-1")
    clock.advance(6)
    info = await wait_state(queue, handle_.id, JobState.QUEUED)
    assert info.stalls == 1
    assert info.attempt == 0

    await lease_as_dead_worker(queue, clock, worker_id="dead-2")
    clock.advance(6)
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.stalls == 2
    assert info.error is not None
    assert "max_stalls=1" in info.error


async def test_max_stalls_zero_fails_on_the_first_stall(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    calls = 0
    worker = harness.worker(max_stalls=0)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        nonlocal calls
        calls += 1
        return "ran"

    handle_ = await queue.enqueue(work, Num(n=1))
    await lease_as_dead_worker(queue, clock)
    harness.start(worker)
    clock.advance(6)
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.stalls == 1
    assert calls == 0


async def test_a_stale_workers_late_completion_is_refused(
    harness: Harness,
    queue: Queue,
    clock: FakeClock,
    backend_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    release_stale = asyncio.Event()
    stale_started = asyncio.Event()
    # The stale worker never renews its lease: as if its process were frozen.
    stale = harness.worker(concurrency=1, lease_seconds=5, lease_renew_interval=3600)

    @stale.handles(work)
    async def stale_handler(payload: Num, ctx: JobContext) -> str:
        stale_started.set()
        await release_stale.wait()
        return "stale"

    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(stale)
    await asyncio.wait_for(stale_started.wait(), 10)
    held = (await queue.driver.job_get_many([handle_.id]))[0]
    assert held is not None and held.worker_id == stale.id and held.lease_token

    other_queue = Queue.from_url(backend_url, clock=clock)
    try:
        live = harness.worker(other_queue)

        @live.handles(work)
        async def live_handler(payload: Num, ctx: JobContext) -> str:
            return "live"

        harness.start(live)
        clock.advance(6)  # the stale worker's lease expires; maintenance rescues the job
        assert await handle_.result(timeout=10) == "live"

        release_stale.set()
        await harness.stop(stale)  # flushes its completer: the late completion is written
        info = await get_info(queue, handle_.id)
        assert info.state is JobState.COMPLETED
        assert info.result == "live"
        assert stale.stats.completed == 0
        assert stale.stats.lease_lost == 1
        assert any(getattr(r, "event", None) == "lease_lost" for r in caplog.records)

        # The fence itself: the old token can change nothing.
        (late,) = await queue.driver.job_finish_many(
            [FinishJob(handle_.id, held.lease_token, TransitionKind.FAIL, error="late")],
            retention=Retention(),
            now=clock.now(),
        )
        assert late.status is TransitionStatus.LEASE_LOST
        assert (await get_info(queue, handle_.id)).result == "live"
    finally:
        await harness.aclose()
        await other_queue.close()


async def test_a_lost_lease_reported_by_the_lease_keeper_interrupts_the_running_job(
    harness: Harness, queue: Queue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    started = asyncio.Event()
    interrupted: list[bool] = []
    runs = 0
    # The worker's own clock never moves. Its lease keeper renews every 50 ms, stamping the
    # lease with that clock: no renewal can push the lease past the moment the test rescues at,
    # and the rescued job (due at the rescue time) is never due for this worker, which is full
    # anyway (concurrency 1). So only the lease keeper's report can stop the stale attempt.
    worker_clock = FakeClock(clock.now())
    worker = harness.worker(clock=worker_clock, concurrency=1, lease_seconds=5)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        nonlocal runs
        runs += 1
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.append(ctx.cancelled.is_set())
            raise
        return "unreachable"

    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(worker)
    await asyncio.wait_for(started.wait(), 10)
    held = (await queue.driver.job_get_many([handle_.id]))[0]
    assert held is not None and held.worker_id == worker.id

    # Our lease expires (say the lease keeper could not reach the backend), the job is rescued
    # and another worker leases it at once.
    clock.advance(6)
    rescued = await queue.driver.job_rescue_expired(max_stalls=5, limit=10, now=clock.now())
    assert rescued.requeued == (handle_.id,)
    other = await lease_as_dead_worker(queue, clock, worker_id="other-worker", lease_seconds=3600)
    assert other.id == handle_.id and other.lease_token != held.lease_token

    await wait_for(lambda: interrupted, what="the stale attempt was interrupted")
    assert interrupted == [True]  # CancelledError, with ctx.cancelled already set
    await wait_for(lambda: worker.stats.lease_lost == 1, what="lease_lost counted")
    await harness.stop(worker)  # flushes the completer: anything the stale attempt sent is written

    assert runs == 1
    s = worker.stats
    assert (s.completed, s.retried, s.failed, s.snoozed, s.cancelled, s.requeued) == (0,) * 6
    assert s.lease_lost == 1
    assert not any("outcome discarded" in r.getMessage() for r in caplog.records)
    now = (await queue.driver.job_get_many([handle_.id]))[0]
    assert now is not None
    assert now.state is JobState.ACTIVE
    assert now.worker_id == "other-worker" and now.lease_token == other.lease_token
    assert now.attempt == 1 and now.stalls == 1


async def test_a_job_fetched_again_stops_its_stale_attempt_without_disturbing_the_new_one(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    started = asyncio.Event()
    interrupted: list[bool] = []
    runs = 0
    # The lease keeper reads the same fake clock: were it to renew between the advance and the
    # rescue below, nothing would expire. It never renews here, so only the re-fetch (``_start``)
    # can notice that the first attempt's lease was lost. The worker's own clock stays put, so
    # its maintenance never sees the lease expire: the rescue below is the test's alone (the
    # worker's maintenance would otherwise race it, and on a backend whose rescue takes several
    # round trips it would often win).
    worker_clock = FakeClock(clock.now())
    worker = harness.worker(clock=worker_clock, lease_seconds=5, lease_renew_interval=3600)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        nonlocal runs
        runs += 1
        if runs > 1:
            return "second run"
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.append(ctx.cancelled.is_set())
            raise
        return "unreachable"

    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(worker)
    await asyncio.wait_for(started.wait(), 10)
    # Our lease expires and the job is rescued; this same worker then fetches it again. The
    # stale attempt must be stopped, and must not disturb the new one.
    clock.advance(6)
    rescued = await queue.driver.job_rescue_expired(max_stalls=5, limit=10, now=clock.now())
    assert rescued.requeued == (handle_.id,)
    assert await handle_.result(timeout=10) == "second run"
    await wait_for(lambda: interrupted, what="the stale attempt was interrupted")
    assert interrupted == [True]
    await wait_for(lambda: worker.stats.lease_lost == 1, what="lease_lost counted")
    assert runs == 2
    assert worker.stats.completed == 1
    info = await get_info(queue, handle_.id)
    assert info.state is JobState.COMPLETED
    assert info.stalls == 1
