"""Graceful shutdown, handing jobs back, and cancellation of waiting and running jobs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from conveyor import (
    FakeClock,
    JobContext,
    JobFailed,
    JobState,
    Queue,
    job,
)
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import ChangeStatus
from tests.conformance.worker.helpers import (
    Harness,
    Num,
    add_probe,
    probe_round,
    wait_for,
    wait_state,
)

blocking = job("test.blocking", Num, result=str)
sync_blocking = job("test.sync_blocking", Num, result=str)


async def test_running_job_finishes_within_the_grace_period(harness: Harness, queue: Queue) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    worker = harness.worker(shutdown_grace=10)

    @worker.handles(blocking)
    async def handle(payload: Num, ctx: JobContext) -> str:
        started.set()
        await release.wait()
        return "finished"

    task = harness.start(worker)
    handle_ = await queue.enqueue(blocking, Num(n=1))
    await asyncio.wait_for(started.wait(), 10)

    worker.stop()
    later = await queue.enqueue(blocking, Num(n=2))  # not fetched: the worker is stopping
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the running job
    release.set()
    await asyncio.wait_for(task, 10)

    info = await handle_.info()
    assert info.state is JobState.COMPLETED
    assert info.result == "finished"
    later_info = await later.info()
    assert later_info.state is JobState.QUEUED
    assert later_info.attempt == 0


@pytest.mark.parametrize("how", ["grace_zero", "grace_expired", "second_stop"])
async def test_unfinished_job_is_handed_back_without_using_an_attempt(
    harness: Harness, queue: Queue, how: str
) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []
    worker = harness.worker(shutdown_grace=0.1 if how == "grace_expired" else 30)

    @worker.handles(blocking)
    async def handle(payload: Num, ctx: JobContext) -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(ctx.cancelled.is_set())
            raise
        return "unreachable"

    task = harness.start(worker)
    handle_ = await queue.enqueue(blocking, Num(n=1))
    await asyncio.wait_for(started.wait(), 10)
    assert (await handle_.info()).attempt == 1

    if how == "grace_zero":
        worker.stop(grace=0)
    elif how == "grace_expired":
        worker.stop()
    else:
        worker.stop()
        await asyncio.sleep(0.05)
        assert not task.done()
        worker.stop()  # a second signal shortens the grace to zero
    await asyncio.wait_for(task, 10)

    assert cancelled == [True]
    info = await handle_.info()
    assert info.state is JobState.QUEUED
    assert info.attempt == 0
    assert info.worker_id is None
    assert worker.stats.requeued == 1


async def test_sync_job_is_handed_back_at_shutdown_and_told_to_stop(
    harness: Harness, queue: Queue
) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()
    worker = harness.worker()

    @worker.handles(sync_blocking)
    def handle(payload: Num, ctx: JobContext) -> str:
        started.set()
        if ctx.cancelled.wait(10):
            saw_cancel.set()
        return "too late"

    task = harness.start(worker)
    handle_ = await queue.enqueue(sync_blocking, Num(n=1))
    await asyncio.to_thread(started.wait, 10)
    worker.stop(grace=0)
    await asyncio.wait_for(task, 10)

    info = await handle_.info()
    assert info.state is JobState.QUEUED
    assert info.attempt == 0
    assert await asyncio.to_thread(saw_cancel.wait, 10)


async def test_stop_before_the_worker_started_still_stops_it(
    harness: Harness, queue: Queue
) -> None:
    worker = harness.worker()
    task = asyncio.create_task(worker.run())
    worker.stop()
    await asyncio.wait_for(task, 10)


async def test_cancel_a_waiting_job(harness: Harness, queue: Queue, clock: FakeClock) -> None:
    ran: list[int] = []
    worker = harness.worker()
    add_probe(worker)

    @worker.handles(blocking)
    async def handle(payload: Num, ctx: JobContext) -> str:
        ran.append(payload.n)
        return "ran"

    scheduled = await queue.enqueue(blocking, Num(n=1), delay=60)
    queued = await queue.enqueue(blocking, Num(n=2))
    results = await queue.cancel([scheduled.id, queued.id, "no-such-job"])
    assert [(r.status, r.state) for r in results] == [
        (ChangeStatus.OK, JobState.CANCELLED),
        (ChangeStatus.OK, JobState.CANCELLED),
        (ChangeStatus.NOT_FOUND, None),
    ]

    harness.start(worker)
    clock.advance(120)
    await probe_round(queue)
    assert ran == []
    for h in (scheduled, queued):
        assert (await h.info()).state is JobState.CANCELLED
        with pytest.raises(JobFailed) as failed:
            await h.result(timeout=1)
        assert failed.value.state == "cancelled"
    again = await scheduled.cancel()
    assert again.status is ChangeStatus.WRONG_STATE


async def test_cancel_a_running_async_job(harness: Harness, queue: Queue) -> None:
    started = asyncio.Event()
    interrupted: list[bool] = []
    worker = harness.worker()

    @worker.handles(blocking)
    async def handle(payload: Num, ctx: JobContext) -> str:
        if payload.n == 2:
            return "after"
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.append(ctx.cancelled.is_set())
            raise
        return "unreachable"

    harness.start(worker)
    handle_ = await queue.enqueue(blocking, Num(n=1))
    await asyncio.wait_for(started.wait(), 10)

    change = await handle_.cancel()
    assert change.status is ChangeStatus.CANCEL_REQUESTED
    assert change.state is JobState.ACTIVE

    info = await wait_state(queue, handle_.id, JobState.CANCELLED)
    assert interrupted == [True]
    assert info.attempt == 1
    assert info.finished_at is not None
    with pytest.raises(JobFailed) as failed:
        await handle_.result(timeout=1)
    assert failed.value.state == "cancelled"
    assert worker.stats.cancelled == 1

    # The worker carries on.
    after = await queue.enqueue(blocking, Num(n=2))
    assert await after.result(timeout=10) == "after"


async def test_cancel_a_running_sync_job_sets_its_flag(harness: Harness, queue: Queue) -> None:
    started = threading.Event()
    worker = harness.worker()

    @worker.handles(sync_blocking)
    def handle(payload: Num, ctx: JobContext) -> str:
        started.set()
        ctx.cancelled.wait(10)
        return "stopped early" if ctx.cancelled.is_set() else "timed out"

    harness.start(worker)
    handle_ = await queue.enqueue(sync_blocking, Num(n=1))
    await asyncio.to_thread(started.wait, 10)
    assert (await handle_.cancel()).status is ChangeStatus.CANCEL_REQUESTED
    await wait_state(queue, handle_.id, JobState.CANCELLED)
    await wait_for(lambda: worker.stats.cancelled == 1)


async def test_a_cancel_reaches_a_running_job_at_once_where_the_backend_can_tell(
    harness: Harness, queue: Queue
) -> None:
    """Before: a cancel waited for the next lease renewal (10 s by default). A backend that can
    notify delivers it at once; here renewals never come, so only that can stop the job."""
    notifies = Capability.CANCEL_NOTIFY in queue.driver.capabilities
    started = asyncio.Event()
    worker = harness.worker(lease_renew_interval=3600 if notifies else 0.05)

    @worker.handles(blocking)
    async def handle(payload: Num, ctx: JobContext) -> str:
        started.set()
        await asyncio.sleep(3600)
        return "unreachable"

    harness.start(worker)
    handle_ = await queue.enqueue(blocking, Num(n=1))
    await asyncio.wait_for(started.wait(), 10)
    (result,) = await queue.cancel([handle_.id])
    assert result.status is ChangeStatus.CANCEL_REQUESTED
    shown = await queue.get(handle_.id)
    # What `jobs show` reports meanwhile, unless a notifying backend already finished it.
    assert shown is not None
    assert shown.cancel_requested or shown.state is JobState.CANCELLED
    info = await wait_state(queue, handle_.id, JobState.CANCELLED, timeout=5)
    assert info.error is not None and info.error.startswith("cancel")
