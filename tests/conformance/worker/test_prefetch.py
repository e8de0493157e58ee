"""Jobs leased ahead of a free slot (``WorkerConfig.prefetch``): held while they wait, started in
order as slots free, handed back unspent when the worker stops; and none leased ahead by
``"auto"`` before the worker knows its jobs are short, so an idle worker can take them."""

from __future__ import annotations

import asyncio

from conveyor import JobContext, JobHandle, JobState, Queue, job
from tests.conformance.worker.helpers import Harness, Num, wait_for

held = job("test.prefetch_held", Num, result=int)


def _gates(n: int) -> list[asyncio.Event]:
    return [asyncio.Event() for _ in range(n)]


async def _active(queue: Queue) -> int:
    return (await queue.counts()).get(JobState.ACTIVE, 0)


async def test_jobs_leased_ahead_start_in_order_as_slots_free_and_go_back_unspent_on_stop(
    harness: Harness, queue: Queue
) -> None:
    release = _gates(6)
    started: list[int] = []
    worker = harness.worker(concurrency=2, prefetch=2, shutdown_grace=10)

    @worker.handles(held)
    async def handle(payload: Num, ctx: JobContext) -> int:
        started.append(payload.n)
        await release[payload.n].wait()
        return payload.n

    handles = [await queue.enqueue(held, Num(n=n)) for n in range(6)]
    task = harness.start(worker)

    # Two run, two more are leased ahead (held, not started), the last two wait in the queue.
    await wait_for(lambda: len(started) == 2, what="two jobs started")
    await wait_for(lambda: _active_is(queue, 4), what="two jobs leased ahead")
    assert started == [0, 1]
    assert (await queue.counts()).get(JobState.QUEUED, 0) == 2

    # A slot frees: the first job leased ahead starts in it, at once and in order.
    release[0].set()
    await wait_for(lambda: len(started) == 3, what="the first job leased ahead started")
    assert started == [0, 1, 2]
    assert await handles[0].result(timeout=10) == 0

    # Job 0's slot went to job 2; its room ahead is leased again (job 4). Stopping hands
    # back what waits ahead, unspent, while the running jobs finish.
    await wait_for(lambda: _active_is(queue, 4), what="the freed room leased again")
    worker.stop()
    for h in handles[3:]:
        await wait_for(lambda h=h: _is_queued(h), what=f"job {h.id} handed back")
    release[1].set()
    release[2].set()
    await asyncio.wait_for(task, 10)
    assert started == [0, 1, 2]
    assert [await h.result(timeout=10) for h in handles[:3]] == [0, 1, 2]
    for h in handles[3:]:
        info = await h.info()
        assert (info.state, info.attempt, info.worker_id) == (JobState.QUEUED, 0, None)
    assert worker.stats.requeued == 2  # jobs 3 and 4; job 5 was never leased


async def _active_is(queue: Queue, n: int) -> bool:
    return await _active(queue) == n


async def _state_is(handle: JobHandle[int], state: JobState) -> bool:
    return (await handle.info()).state is state


async def _is_queued(handle: JobHandle[int]) -> bool:
    return await _state_is(handle, JobState.QUEUED)


async def test_auto_leases_nothing_ahead_before_a_job_has_finished(
    harness: Harness, queue: Queue
) -> None:
    """A worker whose only slot is busy with its first job leaves the next job to another
    worker: it does not know yet whether its jobs are short."""
    release = asyncio.Event()
    first_started = asyncio.Event()
    busy = harness.worker(concurrency=1)
    ran_elsewhere: list[int] = []

    @busy.handles(held)
    async def slow(payload: Num, ctx: JobContext) -> int:
        first_started.set()
        await release.wait()
        return payload.n

    first = await queue.enqueue(held, Num(n=0))
    harness.start(busy)
    await asyncio.wait_for(first_started.wait(), 10)

    second = await queue.enqueue(held, Num(n=1))
    idle = harness.worker(concurrency=1)

    @idle.handles(held)
    async def quick(payload: Num, ctx: JobContext) -> int:
        ran_elsewhere.append(payload.n)
        return payload.n

    harness.start(idle)
    assert await second.result(timeout=10) == 1
    assert ran_elsewhere == [1]
    release.set()
    assert await first.result(timeout=10) == 0


async def test_a_job_cancelled_while_leased_ahead_is_cancelled_and_never_started(
    harness: Harness, queue: Queue
) -> None:
    release = _gates(2)
    started: list[int] = []
    worker = harness.worker(concurrency=1, prefetch=1)

    @worker.handles(held)
    async def handle(payload: Num, ctx: JobContext) -> int:
        started.append(payload.n)
        await release[payload.n].wait()
        return payload.n

    first = await queue.enqueue(held, Num(n=0))
    ahead = await queue.enqueue(held, Num(n=1))
    harness.start(worker)
    await wait_for(lambda: _active_is(queue, 2), what="the second job leased ahead")
    assert started == [0]

    await ahead.cancel()
    await wait_for(lambda: _state_is(ahead, JobState.CANCELLED), what="the cancel recorded")
    release[0].set()
    assert await first.result(timeout=10) == 0
    assert started == [0]
    assert (await ahead.info()).state is JobState.CANCELLED
