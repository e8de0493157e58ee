"""How much a worker takes on and when it lets go: the concurrency cap, a burst worker that
waits for the retries of its own work, and the definition's backoff deciding when a retry runs."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import FakeClock, Fixed, JobContext, JobState, Queue, job
from tests.conformance.worker.helpers import (
    Harness,
    Num,
    add_probe,
    get_info,
    probe_round,
    wait_for,
    wait_state,
)

blocking = job("test.flow.blocking", Num, result=int)
flaky_fast = job("test.flow.flaky_fast", Num, result=int, attempts=3, backoff=Fixed(0.2))
flaky_slow = job("test.flow.flaky_slow", Num, result=int, attempts=3, backoff=Fixed(30))

# How long to watch for something that must not happen: many poll rounds of fast_config's
# 0.02 s poll interval. Only ever used to show an absence, never to wait for an event.
QUIET = 0.3


async def test_a_worker_never_runs_more_jobs_than_its_concurrency(
    harness: Harness, queue: Queue
) -> None:
    release = asyncio.Event()
    started: list[int] = []
    running = 0
    peak = 0
    worker = harness.worker(concurrency=2)

    @worker.handles(blocking)
    async def handle(payload: Num, ctx: JobContext) -> int:
        nonlocal running, peak
        started.append(payload.n)
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1
        return payload.n

    handles = [await queue.enqueue(blocking, Num(n=n)) for n in range(6)]
    harness.start(worker)

    await wait_for(lambda: len(started) >= 2, what="two jobs started")
    counts = await queue.counts()
    assert counts.get(JobState.ACTIVE, 0) == 2, counts
    assert counts.get(JobState.QUEUED, 0) == 4, counts
    # The worker keeps polling while full; it must not claim more in the meantime.
    await asyncio.sleep(QUIET)
    assert sorted(started) == [0, 1]
    counts = await queue.counts()
    assert counts.get(JobState.ACTIVE, 0) == 2, counts
    assert counts.get(JobState.QUEUED, 0) == 4, counts

    release.set()
    assert [await h.result(timeout=10) for h in handles] == list(range(6))
    assert sorted(started) == list(range(6))
    assert peak == 2


async def test_a_burst_worker_waits_for_the_retry_of_a_failed_job(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    attempts: list[int] = []
    worker = harness.worker(burst=True)
    add_probe(worker)

    @worker.handles(flaky_fast)
    async def handle(payload: Num, ctx: JobContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ValueError("transient")
        return payload.n

    handle_ = await queue.enqueue(flaky_fast, Num(n=7))
    task = harness.start(worker)
    info = await wait_state(queue, handle_.id, JobState.RETRYING)
    # The fake clock stands still, so the retry (0.2 s later) is not due: the burst worker has
    # nothing runnable, yet must keep going because the retry is part of its work.
    assert info.run_at.timestamp() == pytest.approx(clock.now() + 0.2, abs=0.01)
    assert not task.done()
    await probe_round(queue)  # the worker has been through idle rounds since the failure
    await asyncio.sleep(QUIET)
    assert not task.done(), "the burst worker exited while a retry of its work was pending"

    clock.advance(1)
    await asyncio.wait_for(task, 10)
    info = await get_info(queue, handle_.id)
    assert info.state is JobState.COMPLETED
    assert info.result == 7
    assert attempts == [1, 2]


async def test_the_definitions_backoff_sets_when_the_retry_runs(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    attempts: list[int] = []
    worker = harness.worker()
    add_probe(worker)

    @worker.handles(flaky_slow)
    async def handle(payload: Num, ctx: JobContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ValueError("transient")  # a plain exception: the backoff decides the delay
        return payload.n

    t0 = clock.now()
    handle_ = await queue.enqueue(flaky_slow, Num(n=3))
    harness.start(worker)
    await wait_for(lambda: worker.stats.retried == 1, what="the first attempt's retry written")
    info = await get_info(queue, handle_.id)
    assert info.run_at.timestamp() == pytest.approx(t0 + 30, abs=0.01)
    assert info.state is JobState.RETRYING

    clock.advance(29)
    await probe_round(queue)  # everything due now has been fetched
    info = await get_info(queue, handle_.id)
    assert info.state is JobState.RETRYING and info.attempt == 1
    assert attempts == [1]

    clock.advance(2)
    assert await handle_.result(timeout=10) == 3
    assert attempts == [1, 2]
