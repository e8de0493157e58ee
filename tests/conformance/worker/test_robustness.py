"""Handlers that misbehave, and the knobs that bound shutdown: the job still ends somewhere
definite, exactly once, and the worker keeps going."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time

import pytest

from conveyor import (
    FakeClock,
    Fixed,
    JobContext,
    JobDef,
    JobState,
    Queue,
    Retention,
    Worker,
    job,
)
from tests.conformance.worker.helpers import Harness, Num, fast_config, wait_for, wait_state

self_cancelling = job("test.self_cancelling", Num, attempts=2, backoff=Fixed(0))
slow_sync = job("test.slow_sync", Num, attempts=2, backoff=Fixed(0), timeout=0.05)
cancellable_sync = job("test.cancellable_sync", Num)
huge_result = job("test.huge_result", Num, result=str)
long_async = job("test.long_async", Num)
delayed = job("test.delayed", Num)


class BrokenBackoff:
    def delay(self, attempt: int, rng: random.Random) -> float:
        raise RuntimeError("bug in a custom backoff")


broken_backoff = job("test.broken_backoff", Num, attempts=2, backoff=BrokenBackoff())
plain = job("test.plain", Num, result=int)


async def test_a_handler_raising_cancelled_error_itself_is_an_ordinary_error(
    harness: Harness, queue: Queue
) -> None:
    worker = harness.worker()

    @worker.handles(self_cancelling)
    async def handle(payload: Num, ctx: JobContext) -> None:
        child = asyncio.ensure_future(asyncio.sleep(10))
        child.cancel()
        await child  # raises CancelledError inside the handler

    harness.start(worker)
    handle_ = await queue.enqueue(self_cancelling, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.attempt == 2
    assert info.error is not None and "CancelledError" in info.error
    assert worker.stats.retried == 1 and worker.stats.failed == 1


async def test_a_timed_out_sync_handler_is_not_run_again_until_its_thread_returns(
    harness: Harness, queue: Queue
) -> None:
    running = 0
    peak = 0
    runs = 0
    told_to_stop: list[bool] = []
    lock = threading.Lock()
    worker = harness.worker()

    @worker.handles(slow_sync)
    def handle(payload: Num, ctx: JobContext) -> None:
        nonlocal running, peak, runs
        with lock:
            running += 1
            runs += 1
            peak = max(peak, running)
        # Far past the 0.05 s timeout: returns early only because the timeout sets ctx.cancelled.
        saw = ctx.cancelled.wait(5)
        time.sleep(0.1)  # a little more work after noticing, as real code would
        with lock:
            told_to_stop.append(saw)
            running -= 1

    harness.start(worker)
    handle_ = await queue.enqueue(slow_sync, Num(n=1))
    # Room for two full 5 s waits, so a missing ctx.cancelled.set() fails on the assert below.
    info = await wait_state(queue, handle_.id, JobState.FAILED, timeout=20)
    assert runs == 2
    assert peak == 1
    assert told_to_stop == [True, True]
    assert info.error is not None and "timeout" in info.error


async def test_a_cancelled_sync_handler_ends_cancelled_once_its_thread_returns(
    harness: Harness, queue: Queue
) -> None:
    started = threading.Event()
    finished = threading.Event()
    worker = harness.worker()

    @worker.handles(cancellable_sync)
    def handle(payload: Num, ctx: JobContext) -> None:
        started.set()
        ctx.cancelled.wait(10)
        finished.set()

    harness.start(worker)
    handle_ = await queue.enqueue(cancellable_sync, Num(n=1))
    await wait_for(started.is_set)
    await queue.cancel([handle_.id])
    info = await wait_state(queue, handle_.id, JobState.CANCELLED)
    assert finished.is_set()
    assert info.attempt == 1


async def test_a_result_over_the_size_limit_fails_the_job_permanently(
    backend_url: str, clock: FakeClock, harness: Harness
) -> None:
    queue = Queue.from_url(backend_url, clock=clock, max_payload_bytes=1000)
    worker = harness.worker(queue)

    @worker.handles(huge_result)
    async def handle(payload: Num, ctx: JobContext) -> str:
        return "x" * 5000

    harness.start(worker)
    handle_ = await queue.enqueue(huge_result, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.attempt == 1
    assert info.error is not None and "ResultTooLarge" in info.error and "5002 bytes" in info.error
    await harness.aclose()
    await queue.close()


class NaNBackoff:
    def delay(self, attempt: int, rng: random.Random) -> float:
        return float("nan")


class HugeBackoff:
    def delay(self, attempt: int, rng: random.Random) -> float:
        return 1e300


nan_backoff = job("test.nan_backoff", Num, attempts=3, backoff=NaNBackoff())
huge_backoff = job("test.huge_backoff", Num, attempts=3, backoff=HugeBackoff())


@pytest.mark.parametrize(
    ("definition", "what"),
    [
        (broken_backoff, "raised RuntimeError: bug in a custom backoff"),
        (nan_backoff, "nan"),
        (huge_backoff, "over 100 years"),
    ],
    ids=["raises", "nan", "huge"],
)
async def test_a_bad_custom_backoff_fails_only_its_job_with_a_clear_error(
    harness: Harness, queue: Queue, definition: JobDef[Num, None], what: str
) -> None:
    """Before: the task computing the transition died, nothing was written and the lease
    keeper renewed the job for as long as the worker lived."""
    worker = harness.worker(concurrency=2)

    @worker.handles(definition)
    async def handle(payload: Num, ctx: JobContext) -> None:
        raise ValueError("transient")

    @worker.handles(plain)
    async def handle_plain(payload: Num, ctx: JobContext) -> int:
        return payload.n

    harness.start(worker)
    handle_ = await queue.enqueue(definition, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.error is not None
    assert info.error.startswith(f"InvalidBackoff: the backoff of job {definition.name!r}")
    assert what in info.error and "transient" in info.error
    assert info.attempt == 1
    ok = await queue.enqueue(plain, Num(n=5))
    assert await ok.result(timeout=10) == 5  # the worker goes on


async def test_stop_with_a_grace_hands_back_jobs_that_outlast_it(
    harness: Harness, queue: Queue
) -> None:
    started = asyncio.Event()
    worker = harness.worker(shutdown_grace=60)

    @worker.handles(long_async)
    async def handle(payload: Num, ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(60)

    task = harness.start(worker)
    handle_ = await queue.enqueue(long_async, Num(n=1))
    await asyncio.wait_for(started.wait(), 10)
    begun = time.monotonic()
    worker.stop(grace=0.2)
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - begun < 5  # not the configured 60 s
    info = await wait_state(queue, handle_.id, JobState.QUEUED)
    assert info.attempt == 0


async def test_a_burst_worker_does_not_wait_for_future_or_paused_work(
    queue: Queue, clock: FakeClock
) -> None:
    worker = Worker(queue, config=fast_config(clock, burst=True))

    @worker.handles(delayed)
    async def handle(payload: Num, ctx: JobContext) -> None:
        return None

    later = await queue.enqueue(delayed, Num(n=1), delay=3600)
    await queue.enqueue(delayed, Num(n=2), queue="paused")
    await queue.pause("paused")
    worker.config = fast_config(clock, burst=True, queues=("default", "paused"))
    await asyncio.wait_for(worker.run(), 10)
    assert (await queue.counts("paused"))[JobState.QUEUED] == 1
    info = await queue.get(later.id)
    assert info is not None and info.state is JobState.SCHEDULED


async def test_progress_and_handler_log_extras_reach_the_log_record(
    harness: Harness, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    progress_job = job("test.progress", Num)
    worker = harness.worker(retention=Retention())

    @worker.handles(progress_job)
    async def handle(payload: Num, ctx: JobContext) -> None:
        ctx.progress(0.5)
        ctx.logger.info("custom line", extra={"rows": 12})

    # Progress is logged at DEBUG: a handler may report it for every row it handles, and the
    # value itself is stored with the job.
    caplog.set_level(logging.DEBUG, logger="conveyor")
    harness.start(worker)
    handle_ = await queue.enqueue(progress_job, Num(n=1))
    await wait_state(queue, handle_.id, JobState.COMPLETED)
    progress = next(r for r in caplog.records if r.getMessage() == "job progress")
    custom = next(r for r in caplog.records if r.getMessage() == "custom line")
    assert progress.__dict__["progress"] == 0.5 and progress.__dict__["job_id"] == handle_.id
    assert custom.__dict__["rows"] == 12 and custom.__dict__["queue"] == "default"


async def test_a_plain_function_returning_a_coroutine_fails_with_a_hint(
    harness: Harness, queue: Queue
) -> None:
    sneaky = job("test.sneaky", Num)
    worker = harness.worker()

    async def the_real_work() -> None:
        raise AssertionError("never awaited, never run")

    def handle(payload: Num, ctx: JobContext) -> None:
        return the_real_work()  # type: ignore[return-value]

    worker.register(sneaky, handle)
    harness.start(worker)
    handle_ = await queue.enqueue(sneaky, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.attempt == 1
    assert info.error is not None and "declare it `async def`" in info.error
