"""What a handler's return value or exception does to its job, through a real worker."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from pydantic import BaseModel

from conveyor import (
    FakeClock,
    Fixed,
    JobContext,
    JobFailed,
    JobState,
    Permanent,
    Queue,
    Retry,
    Snooze,
    job,
)
from tests.conformance.worker.helpers import (
    Harness,
    Num,
    add_probe,
    probe_round,
    wait_for,
    wait_state,
)


class Summary(BaseModel):
    total: int
    labels: list[str]


summarize = job("test.summarize", Num, result=Summary)
flaky = job("test.flaky", Num, result=int, attempts=3, backoff=Fixed(0))
always_fails = job("test.always_fails", Num, attempts=2, backoff=Fixed(0))
permanent_signal = job("test.permanent_signal", Num, attempts=5, backoff=Fixed(0))
permanent_listed = job(
    "test.permanent_listed", Num, attempts=5, backoff=Fixed(0), permanent=(ValueError,)
)
retry_later = job("test.retry_later", Num, result=str, attempts=3)
snoozer = job("test.snoozer", Num, result=int, attempts=1)
slow = job("test.slow", Num, attempts=2, backoff=Fixed(0), timeout=0.1)
sync_job = job("test.sync", Num, result=int)


async def test_completes_with_a_typed_result(harness: Harness, queue: Queue) -> None:
    seen: list[JobContext] = []
    worker = harness.worker()

    @worker.handles(summarize)
    async def handle(payload: Num, ctx: JobContext) -> Summary:
        seen.append(ctx)
        return Summary(total=payload.n * 2, labels=["a", "b"])

    harness.start(worker)
    handle_ = await queue.enqueue(summarize, Num(n=21))
    result = await handle_.result(timeout=10)

    assert isinstance(result, Summary)
    assert result == Summary(total=42, labels=["a", "b"])
    info = await handle_.info()
    assert info.state is JobState.COMPLETED
    assert info.attempt == 1
    assert info.finished_at is not None
    assert info.result == {"total": 42, "labels": ["a", "b"]}
    (ctx,) = seen
    assert (ctx.job_id, ctx.job_name, ctx.queue, ctx.attempt) == (
        handle_.id,
        "test.summarize",
        "default",
        1,
    )
    assert ctx.max_attempts == 3
    assert ctx.worker_id == worker.id
    assert not ctx.cancelled.is_set()


async def test_transient_errors_are_retried_until_success(harness: Harness, queue: Queue) -> None:
    attempts: list[int] = []
    worker = harness.worker()

    @worker.handles(flaky)
    async def handle(payload: Num, ctx: JobContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"transient failure {ctx.attempt}")
        return payload.n

    harness.start(worker)
    handle_ = await queue.enqueue(flaky, Num(n=7))
    assert await handle_.result(timeout=10) == 7
    assert attempts == [1, 2, 3]
    info = await handle_.info()
    assert info.state is JobState.COMPLETED
    assert info.attempt == 3
    await wait_for(lambda: worker.stats.completed == 1)
    assert worker.stats.retried == 2


async def test_attempts_exhausted_fails_with_the_error(harness: Harness, queue: Queue) -> None:
    calls = 0
    worker = harness.worker()

    @worker.handles(always_fails)
    async def handle(payload: Num, ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the database is on fire")

    harness.start(worker)
    handle_ = await queue.enqueue(always_fails, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)

    assert calls == 2
    assert info.attempt == 2
    assert info.error is not None
    first_line = info.error.splitlines()[0]
    assert first_line == (
        "RuntimeError: the database is on fire (attempt 2 of 2, no attempts left)"
    )
    assert "Traceback" in info.error
    with pytest.raises(JobFailed) as failed:
        await handle_.result(timeout=1)
    assert failed.value.state == "failed"
    assert "the database is on fire" in (failed.value.error or "")


async def test_permanent_signal_fails_after_one_attempt(harness: Harness, queue: Queue) -> None:
    calls = 0
    worker = harness.worker()

    @worker.handles(permanent_signal)
    async def handle(payload: Num, ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise Permanent("invitation not found")

    harness.start(worker)
    handle_ = await queue.enqueue(permanent_signal, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert calls == 1
    assert info.attempt == 1
    assert info.error is not None
    assert info.error.startswith("Permanent: invitation not found")


async def test_listed_permanent_exception_fails_after_one_attempt(
    harness: Harness, queue: Queue
) -> None:
    calls = 0
    worker = harness.worker()

    @worker.handles(permanent_listed)
    def handle(payload: Num, ctx: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"bad value {payload.n}")

    harness.start(worker)
    handle_ = await queue.enqueue(permanent_listed, Num(n=9))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert calls == 1
    assert info.attempt == 1
    assert info.error is not None
    assert info.error.startswith("ValueError: bad value 9")


async def test_retry_signal_uses_its_delay(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    attempts: list[int] = []
    worker = harness.worker()
    add_probe(worker)

    @worker.handles(retry_later)
    async def handle(payload: Num, ctx: JobContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise Retry("rate limited", delay=timedelta(seconds=30))
        return "done"

    harness.start(worker)
    t0 = clock.now()
    handle_ = await queue.enqueue(retry_later, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.RETRYING)
    assert info.attempt == 1
    assert info.error == "Retry: rate limited"
    assert info.run_at.timestamp() == pytest.approx(t0 + 30, abs=1e-3)

    clock.advance(29)
    await probe_round(queue)  # the worker has fetched since, and left the job alone
    assert (await handle_.info()).state is JobState.RETRYING

    clock.advance(2)
    assert await handle_.result(timeout=10) == "done"
    assert attempts == [1, 2]
    assert (await handle_.info()).attempt == 2


async def test_snooze_reschedules_without_consuming_an_attempt(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    attempts: list[int] = []
    worker = harness.worker()

    @worker.handles(snoozer)
    async def handle(payload: Num, ctx: JobContext) -> int:
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise Snooze(timedelta(minutes=1))
        return len(attempts)

    harness.start(worker)
    handle_ = await queue.enqueue(snoozer, Num(n=1))  # attempts=1: a consumed attempt would fail

    for runs in (1, 2):
        await wait_for(lambda runs=runs: len(attempts) == runs)  # type: ignore[misc]
        info = await wait_state(queue, handle_.id, JobState.SCHEDULED)
        assert info.attempt == 0
        assert info.run_at.timestamp() == pytest.approx(clock.now() + 60, abs=1e-3)
        clock.advance(61)

    assert await handle_.result(timeout=10) == 3
    assert attempts == [1, 1, 1]
    info = await handle_.info()
    assert info.state is JobState.COMPLETED
    assert info.attempt == 1
    assert worker.stats.snoozed == 2


async def test_timeout_retries_then_fails_with_a_timeout_error(
    harness: Harness, queue: Queue
) -> None:
    cancelled: list[bool] = []
    worker = harness.worker()

    @worker.handles(slow)
    async def handle(payload: Num, ctx: JobContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    harness.start(worker)
    handle_ = await queue.enqueue(slow, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert cancelled == [True, True]
    assert info.attempt == 2
    assert info.error is not None
    assert info.error.startswith("TimeoutError: job exceeded its timeout of 0.1s")
    assert "(attempt 2 of 2, no attempts left)" in info.error


async def test_a_handler_raising_timeout_error_itself_is_an_ordinary_error(
    harness: Harness, queue: Queue
) -> None:
    definition = job("test.own_timeout", Num, attempts=1, timeout=30)
    worker = harness.worker()

    @worker.handles(definition)
    async def handle(payload: Num, ctx: JobContext) -> None:
        raise TimeoutError("upstream timed out")

    harness.start(worker)
    handle_ = await queue.enqueue(definition, Num(n=1))
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.error is not None
    assert info.error.startswith("TimeoutError: upstream timed out")


async def test_sync_handler_runs_in_a_thread(harness: Harness, queue: Queue) -> None:
    threads: list[threading.Thread] = []
    worker = harness.worker()

    @worker.handles(sync_job)
    def handle(payload: Num, ctx: JobContext) -> int:
        threads.append(threading.current_thread())
        return payload.n + 1

    harness.start(worker)
    handles = [await queue.enqueue(sync_job, Num(n=i)) for i in range(3)]
    assert [await h.result(timeout=10) for h in handles] == [1, 2, 3]
    assert len(threads) == 3
    assert all(t is not threading.main_thread() for t in threads)


async def test_sync_handler_errors_are_retried(harness: Harness, queue: Queue) -> None:
    worker = harness.worker()

    @worker.handles(flaky)
    def handle(payload: Num, ctx: JobContext) -> int:
        if ctx.attempt == 1:
            raise OSError("disk hiccup")
        return ctx.attempt

    harness.start(worker)
    handle_ = await queue.enqueue(flaky, Num(n=1))
    assert await handle_.result(timeout=10) == 2
