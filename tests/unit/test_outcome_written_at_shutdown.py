"""A job whose outcome needs a round trip before it is written (a rate-limited job pauses its
queue first) still has it written when the worker stops meanwhile: shutdown waits for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from conveyor import FakeClock, JobContext, JobState, Queue, Rate, RateLimited, job
from conveyor.backends.memory.driver import MemoryDriver
from tests.conformance.worker.helpers import Harness, Num, get_info, wait_state

upstream = job("test.shutdown.upstream", Num, queue="upstream", rate_limit=Rate(100, per=1))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def queue(clock: FakeClock) -> AsyncIterator[Queue]:
    queue = Queue.from_url(f"memory://{uuid.uuid4().hex}", clock=clock)
    await queue.connect()
    yield queue
    await queue.close()


@pytest.fixture
async def harness(queue: Queue, clock: FakeClock) -> AsyncIterator[Harness]:
    harness = Harness(queue, clock)
    yield harness
    await harness.aclose()


async def test_a_stop_during_the_queue_pause_still_puts_the_job_back(
    harness: Harness, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    pausing = asyncio.Event()
    release = asyncio.Event()
    block = MemoryDriver.rate_limit_block

    async def slow_block(self: MemoryDriver, *args: Any, **kwargs: Any) -> None:
        pausing.set()
        await release.wait()  # a round trip that is still out when the worker is told to stop
        await block(self, *args, **kwargs)

    monkeypatch.setattr(MemoryDriver, "rate_limit_block", slow_block)
    worker = harness.worker(concurrency=2)

    @worker.handles(upstream)
    async def handle(payload: Num, ctx: JobContext) -> None:
        raise RateLimited(timedelta(seconds=30), "HTTP 429")

    task = harness.start(worker)
    handle_ = await queue.enqueue(upstream, Num(n=1))
    await asyncio.wait_for(pausing.wait(), 10)
    worker.stop()
    # The shutdown must be waiting for the outcome, not done without it.
    done, _ = await asyncio.wait([task], timeout=0.2)
    assert not done, "the worker stopped before the rate-limited job's outcome was written"
    release.set()
    await asyncio.wait_for(task, 10)
    info = await get_info(queue, handle_.id)
    assert (info.state, info.attempt) == (JobState.QUEUED, 0)


grouped = job("test.pause.grouped", Num, group_key=lambda p: str(p.n), attempts=1)


@pytest.mark.parametrize("definition", [upstream, grouped], ids=["queue", "group"])
async def test_a_pause_that_cannot_be_written_snoozes_the_job_instead(
    harness: Harness,
    queue: Queue,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    definition: Any,
) -> None:
    """Without the pause, putting the job straight back would start it again at once, against
    the upstream's limit, over and over: it waits ``retry_after`` alone instead, its attempt
    given back."""
    calls: list[float] = []

    async def failing_block(self: MemoryDriver, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the backend went away")

    monkeypatch.setattr(MemoryDriver, "rate_limit_block", failing_block)
    monkeypatch.setattr(MemoryDriver, "group_block", failing_block)
    worker = harness.worker(concurrency=2)

    @worker.handles(definition)
    async def handle(payload: Num, ctx: JobContext) -> None:
        calls.append(clock.now())
        if len(calls) == 1:
            raise RateLimited(timedelta(seconds=30), "HTTP 429")

    harness.start(worker)
    handle_ = await queue.enqueue(definition, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.SCHEDULED)
    assert info.attempt == 0 and info.run_at.timestamp() == pytest.approx(clock.now() + 30)
    assert len(calls) == 1
    clock.advance(30)
    await wait_state(queue, handle_.id, JobState.COMPLETED)
    assert len(calls) == 2
