"""Rate-limited definitions on a real worker over every backend, with a fake clock: starts held
back by the limit, the worker waking when the window lets the next ones start, and a handler's
``RateLimited`` pausing its queue without spending an attempt."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from conveyor import (
    FakeClock,
    InvalidJobDefinition,
    JobContext,
    JobState,
    Queue,
    Rate,
    RateLimited,
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

limited = job("test.rate.limited", Num, result=int, queue="limited", rate_limit=Rate(3, per=10))
upstream = job(
    "test.rate.upstream", Num, result=int, queue="upstream", attempts=1, rate_limit=Rate(100, 1)
)
unlimited = job("test.rate.unlimited", Num, result=int, attempts=1)


async def test_starts_wait_for_the_window_and_the_worker_wakes_when_it_slides(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    started: list[tuple[float, int]] = []
    worker = harness.worker(concurrency=10)

    @worker.handles(limited)
    async def handle(payload: Num, ctx: JobContext) -> int:
        started.append((clock.now(), payload.n))
        return payload.n

    harness.start(worker)
    t0 = clock.now()
    handles = [await queue.enqueue(limited, Num(n=i)) for i in range(8)]
    await wait_for(lambda: len(started) == 3, what="the first three starts")
    # Time moves in two steps: nothing may start at 9.9 s (the start times below prove it).
    clock.advance(9.9)
    clock.advance(0.1)
    await wait_for(lambda: len(started) == 6, what="three more once the window slid")
    clock.advance(10)
    for h in handles:
        await h.result(timeout=10)
    assert [n for _, n in started] == list(range(8))
    assert [at - t0 for at, _ in started] == pytest.approx([0] * 3 + [10] * 3 + [20] * 2)


async def test_a_held_queue_does_not_hold_the_worker_s_other_queues(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    started: list[int] = []
    worker = harness.worker(concurrency=10)
    add_probe(worker)

    @worker.handles(limited)
    async def handle(payload: Num, ctx: JobContext) -> int:
        started.append(payload.n)
        return payload.n

    harness.start(worker)
    for i in range(5):
        await queue.enqueue(limited, Num(n=i))
    await wait_for(lambda: len(started) == 3)
    # A job of another queue runs while the limited one is held; the held one stays held.
    await probe_round(queue)
    await probe_round(queue)
    assert len(started) == 3
    clock.advance(10)
    await wait_for(lambda: len(started) == 5)


async def test_rate_limited_pauses_the_queue_without_spending_an_attempt(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    calls: list[tuple[int, float]] = []
    worker = harness.worker(concurrency=5)

    @worker.handles(upstream)
    async def handle(payload: Num, ctx: JobContext) -> int:
        calls.append((payload.n, clock.now()))
        if payload.n == 0 and len(calls) == 1:
            raise RateLimited(timedelta(seconds=30), "upstream said 429")
        return payload.n

    harness.start(worker)
    t0 = clock.now()
    first = await queue.enqueue(upstream, Num(n=0))
    await wait_for(lambda: len(calls) == 1)
    info = await wait_state(queue, first.id, JobState.QUEUED)
    assert info.attempt == 0  # attempts=1: a spent attempt would have failed it
    second = await queue.enqueue(upstream, Num(n=1))
    clock.advance(29)
    await wait_for(lambda: clock.now() >= t0 + 29)
    assert (await wait_state(queue, second.id, JobState.QUEUED)).attempt == 0
    assert len(calls) == 1
    clock.advance(1)
    assert await first.result(timeout=10) == 0
    assert await second.result(timeout=10) == 1
    assert all(at >= t0 + 30 for _, at in calls[1:])
    assert worker.stats.requeued == 1


async def test_rate_limited_without_a_rate_limit_snoozes_only_that_job(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    calls: list[int] = []
    worker = harness.worker()
    add_probe(worker)

    @worker.handles(unlimited)
    async def handle(payload: Num, ctx: JobContext) -> int:
        calls.append(payload.n)
        if len(calls) == 1:
            raise RateLimited(45)
        return payload.n

    harness.start(worker)
    handle_ = await queue.enqueue(unlimited, Num(n=7))
    info = await wait_state(queue, handle_.id, JobState.SCHEDULED)
    assert info.attempt == 0
    assert info.run_at.timestamp() == pytest.approx(clock.now() + 45, abs=1e-3)
    await probe_round(queue)  # the queue itself is not paused
    clock.advance(46)
    assert await handle_.result(timeout=10) == 7


def test_a_rate_limited_definition_needs_a_queue_of_its_own(harness: Harness) -> None:
    shared = job("test.rate.shared", Num, queue="limited")
    worker = harness.worker()

    @worker.handles(limited)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return 0

    @worker.handles(shared)
    async def handle_shared(payload: Num, ctx: JobContext) -> None:
        return None

    with pytest.raises(InvalidJobDefinition) as caught:
        worker.check()
    message = str(caught.value)
    assert "test.rate.limited" in message and "test.rate.shared" in message
    assert "queue 'limited'" in message and 'job(..., queue="' in message


def test_two_limits_on_one_queue_are_refused(harness: Harness) -> None:
    other = job("test.rate.other", Num, queue="limited", rate_limit=Rate(5, per=10))
    worker = harness.worker()
    worker.register(limited, lambda payload, ctx: 0)
    worker.register(other, lambda payload, ctx: 0)
    with pytest.raises(InvalidJobDefinition, match=r"test\.rate\.other"):
        worker.check()


async def test_the_start_up_line_names_the_limits(
    harness: Harness, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    worker = harness.worker()
    worker.register(limited, lambda payload, ctx: 0)
    with caplog.at_level(logging.INFO, logger="conveyor.worker"):
        harness.start(worker)
        await harness.registered(worker)
        await wait_for(lambda: "rate limits: limited: 3 per 10s" in caplog.text)
