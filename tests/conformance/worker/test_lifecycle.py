"""Starting, draining and retention; the sync portal against a running worker."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from conveyor import (
    FakeClock,
    JobContext,
    JobState,
    MissingHandlers,
    Queue,
    Retention,
    SyncQueue,
    Worker,
    job,
)
from tests.conformance.worker.helpers import (
    Harness,
    Num,
    fast_config,
    unfinished,
    wait_for,
    wait_state,
)

square = job("test.square", Num, result=int)
declared_only = job("test.declared_only", Num)
also_declared = job("test.also_declared", Num, queue="other")


async def test_retention_keeps_only_the_newest_completed(harness: Harness, queue: Queue) -> None:
    done: list[int] = []
    # Maintenance ticks once at start only: what is checked is the retention applied by the
    # completion itself (the driver contract), not a later prune.
    worker = harness.worker(
        concurrency=1, retention=Retention(completed_max_count=2), maintenance_interval=3600
    )

    @worker.handles(square)
    async def handle(payload: Num, ctx: JobContext) -> int:
        done.append(payload.n)
        return payload.n**2

    handles = [await queue.enqueue(square, Num(n=i)) for i in range(5)]
    harness.start(worker)

    async def all_finished() -> bool:
        return len(done) == 5 and await unfinished(queue) == 0

    await wait_for(all_finished)
    await wait_for(lambda: worker.stats.completed == 5)
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == 2
    kept = [await queue.get(h.id) for h in handles]
    assert [k is not None for k in kept] == [False, False, False, True, True]
    assert await handles[4].result(timeout=1) == 16


async def test_worker_refuses_to_start_without_a_declared_handler(
    queue: Queue, clock: FakeClock
) -> None:
    worker = Worker(queue, jobs=[square, declared_only, also_declared], config=fast_config(clock))

    @worker.handles(square)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n

    with pytest.raises(MissingHandlers) as info:
        worker.check()
    assert info.value.job_names == ["test.also_declared", "test.declared_only"]
    with pytest.raises(MissingHandlers, match=r"test\.declared_only"):
        await asyncio.wait_for(worker.run(), 10)
    # Nothing was started: no heartbeat was sent.
    assert await queue.workers() == []


async def test_declared_definitions_set_the_served_queues(queue: Queue, clock: FakeClock) -> None:
    worker = Worker(queue, jobs=[square, also_declared], config=fast_config(clock))
    assert worker.queues == ("default", "other")
    narrowed = Worker(queue, jobs=[square], queues=["only"], config=fast_config(clock))
    assert narrowed.queues == ("only",)


async def test_burst_worker_exits_once_drained(queue: Queue, clock: FakeClock) -> None:
    worker = Worker(queue, config=fast_config(clock, burst=True, concurrency=2))
    seen: list[int] = []

    @worker.handles(square)
    async def handle(payload: Num, ctx: JobContext) -> int:
        await asyncio.sleep(0.01)
        seen.append(payload.n)
        return payload.n**2

    handles = [await queue.enqueue(square, Num(n=i)) for i in range(6)]
    await asyncio.wait_for(worker.run(), 10)

    assert sorted(seen) == list(range(6))
    for i, h in enumerate(handles):
        assert await h.result(timeout=1) == i * i
    assert await unfinished(queue) == 0
    assert worker.stats.completed == 6


async def test_burst_worker_with_nothing_to_do_exits_at_once(
    queue: Queue, clock: FakeClock
) -> None:
    worker = Worker(queue, config=fast_config(clock, burst=True))
    worker.register(square, lambda payload, ctx: payload.n)
    await asyncio.wait_for(worker.run(), 10)
    assert worker.stats.fetched == 0


async def test_sync_queue_against_a_running_worker(
    harness: Harness, queue: Queue, backend_url: str, clock: FakeClock
) -> None:
    worker = harness.worker()

    @worker.handles(square)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n**2

    harness.start(worker)

    def produce() -> tuple[int, int, bool, str]:
        with SyncQueue.from_url(backend_url, clock=clock) as sync_queue:
            handle_ = sync_queue.enqueue(square, Num(n=12), job_id="sync-1")
            again = sync_queue.enqueue(square, Num(n=13), job_id="sync-1")
            untyped = sync_queue.enqueue_by_name("test.square", {"n": 3})
            result = handle_.result(timeout=10)
            info = sync_queue.get(handle_.id)
            assert info is not None
            return result, untyped.result(timeout=10), again.duplicate, info.state.value

    result, untyped, duplicate, state = await asyncio.to_thread(produce)
    assert result == 144
    assert untyped == 9
    assert duplicate is True
    assert state == "completed"
    info = await wait_state(queue, "sync-1", JobState.COMPLETED)
    assert info.result == 144


async def test_maintenance_prunes_completed_beyond_retention(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    # Jobs completed by a worker with a generous policy are pruned by one with a strict policy.
    generous = harness.worker(retention=Retention(completed_max_count=None))
    generous.register(square, lambda payload, ctx: payload.n)
    harness.start(generous)
    handles = [await queue.enqueue(square, Num(n=i)) for i in range(4)]
    for h in handles:
        await wait_state(queue, h.id, JobState.COMPLETED)
    await harness.stop(generous)
    assert (await queue.counts())[JobState.COMPLETED] == 4

    strict = harness.worker(queues=["elsewhere"], retention=Retention(completed_max_count=1))
    harness.start(strict)

    async def pruned() -> bool:
        return (await queue.counts())[JobState.COMPLETED] == 1

    await wait_for(pruned)
    assert await queue.get(handles[-1].id) is not None


async def test_purge_older_than_uses_the_queue_clock(queue: Queue, clock: FakeClock) -> None:
    old = await queue.enqueue(square, Num(n=1))
    new = await queue.enqueue(square, Num(n=2))
    await old.cancel()
    clock.advance(2 * 3600)
    await new.cancel()

    assert await queue.purge(states=["cancelled"], older_than=timedelta(hours=1)) == 1
    assert await queue.get(old.id) is None
    assert await queue.get(new.id) is not None
    assert await queue.purge(states=["cancelled"]) == 1


async def test_enqueue_by_name_follows_the_queue_the_workers_declared(
    harness: Harness, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: ``enqueue_by_name("email.send_invite", ...)`` landed in ``default`` while the
    definition's queue was ``emails``, and sat there forever with no worker."""
    emails = job("test.email_route", Num, result=int, queue="emails")
    worker = harness.worker(jobs=[emails])

    @worker.handles(emails)
    async def handle(payload: Num, ctx: JobContext) -> int:
        assert ctx.queue == "emails"
        return payload.n

    harness.start(worker)
    await harness.registered(worker)
    handle_ = await queue.enqueue_by_name("test.email_route", {"n": 4})
    assert await handle_.result(timeout=10) == 4
    assert (await handle_.info()).queue == "emails"
    caplog.set_level(logging.WARNING, logger="conveyor.queue")
    stray = await queue.enqueue_by_name("test.nobody_declared", {"n": 1})
    assert (await stray.info()).queue == "default"
    assert "no worker has declared job 'test.nobody_declared'" in caplog.text
