"""Middleware around handlers, failure hooks, observers and throughput counters, through a
real worker on every backend."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from conveyor import (
    CallNext,
    FakeClock,
    Fixed,
    JobCall,
    JobContext,
    JobEvent,
    JobState,
    Observer,
    Permanent,
    Queue,
    job,
)
from conveyor.drivers.records import FetchParams, JobRecord, Lease, TransitionKind
from tests.conformance.worker.helpers import Harness, Num, wait_for, wait_state

echo = job("hooks.echo", Num, result=int)
sync_echo = job("hooks.sync_echo", Num, result=str)
flaky = job("hooks.flaky", Num, result=int, attempts=3, backoff=Fixed(0))
doomed = job("hooks.doomed", Num, attempts=2, backoff=Fixed(0))


class Login(BaseModel):
    user: str
    password: SecretStr


login = job("hooks.login", Login, attempts=1)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def test_middleware_wraps_handlers_in_order(harness: Harness, queue: Queue) -> None:
    worker = harness.worker()
    calls: list[str] = []

    @worker.use
    async def outer(call: JobCall, call_next: CallNext) -> object:
        calls.append(f"outer>{call.definition.name}:{call.ctx.attempt}")
        result = await call_next()
        calls.append("outer<")
        # What middleware returns is the job's result.
        return result + 1 if isinstance(result, int) else result

    @worker.use
    async def inner(call: JobCall, call_next: CallNext) -> object:
        assert isinstance(call.payload, Num)
        calls.append(f"inner>{call.payload.n}")
        token = request_id.set(f"req-{call.payload.n}")
        try:
            return await call_next()
        finally:
            request_id.reset(token)
            calls.append("inner<")

    seen: list[str] = []

    @worker.handles(echo)
    async def handle(payload: Num, ctx: JobContext) -> int:
        seen.append(request_id.get())
        return payload.n * 10

    @worker.handles(sync_echo)
    def handle_sync(payload: Num, ctx: JobContext) -> str:
        # Context variables set by middleware reach a sync handler's thread.
        return f"{request_id.get()}@{threading.current_thread().name}"

    harness.start(worker)
    first = await queue.enqueue(echo, Num(n=4))
    assert await first.result(timeout=10) == 41
    assert calls == ["outer>hooks.echo:1", "inner>4", "inner<", "outer<"]
    assert seen == ["req-4"]
    second = await queue.enqueue(sync_echo, Num(n=7))
    assert await second.result(timeout=10) == "req-7@conveyor-sync-handler"


async def test_what_middleware_raises_is_the_jobs_error(harness: Harness, queue: Queue) -> None:
    worker = harness.worker()
    ran: list[int] = []

    @worker.use
    async def gate(call: JobCall, call_next: CallNext) -> object:
        assert isinstance(call.payload, Num)
        if call.payload.n < 0:
            raise Permanent("negative numbers are refused")
        return await call_next()

    @worker.handles(echo)
    async def handle(payload: Num, ctx: JobContext) -> int:
        ran.append(payload.n)
        return payload.n

    harness.start(worker)
    refused = await queue.enqueue(echo, Num(n=-1))
    info = await wait_state(queue, refused.id, JobState.FAILED)
    assert info.error is not None and "negative numbers are refused" in info.error
    assert info.attempt == 1  # Permanent from middleware: no retry
    ok = await queue.enqueue(echo, Num(n=2))
    assert await ok.result(timeout=10) == 2
    assert ran == [2]


async def test_hooks_see_retries_and_the_dead_job(harness: Harness, queue: Queue) -> None:
    worker = harness.worker()
    events: list[tuple[str, str, int, float | None]] = []
    typed: list[int] = []

    @worker.on_retry
    async def on_retry(event: JobEvent[Any]) -> None:
        events.append(("retry", event.job_name, event.attempt, event.retry_in))

    @worker.on_failed
    def on_failed(event: JobEvent[Any]) -> None:  # a sync hook runs on a thread
        events.append(("failed", event.job_name, event.attempt, None))

    @worker.on_dead(doomed)
    async def on_doomed(event: JobEvent[Num]) -> None:
        assert event.payload is not None
        typed.append(event.payload.n)  # typed as the definition's payload
        assert event.error is not None and "ValueError: nope" in event.error

    @worker.handles(doomed)
    async def handle(payload: Num, ctx: JobContext) -> None:
        raise ValueError("nope")

    harness.start(worker)
    handle_ = await queue.enqueue(doomed, Num(n=9))
    await wait_state(queue, handle_.id, JobState.FAILED)
    await wait_for(lambda: typed == [9] and len(events) == 3, what="hooks ran")
    assert sorted(events, key=lambda e: (e[2], e[0])) == [
        ("failed", "hooks.doomed", 1, None),
        ("retry", "hooks.doomed", 1, 0.0),
        ("failed", "hooks.doomed", 2, None),
    ]


async def test_a_hook_that_raises_or_hangs_changes_nothing(
    harness: Harness,
    queue: Queue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("conveyor._hooks.HOOK_TIMEOUT", 0.2)
    worker = harness.worker()
    attempts: list[int] = []

    @worker.on_retry
    async def broken(event: JobEvent[Any]) -> None:
        raise RuntimeError("the pager is down")

    @worker.on_failed
    async def stuck(event: JobEvent[Any]) -> None:
        await asyncio.Event().wait()

    @worker.handles(flaky)
    async def handle(payload: Num, ctx: JobContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError("not yet")
        return payload.n

    harness.start(worker)
    with caplog.at_level(logging.ERROR, logger="conveyor.worker"):
        h = await queue.enqueue(flaky, Num(n=5))
        assert await h.result(timeout=10) == 5
        await wait_for(
            lambda: sum("cut off" in r.getMessage() for r in caplog.records) == 2,
            what="the hanging hooks were cut off",
        )
    assert attempts == [1, 2, 3]
    assert sum("the pager is down" in (r.exc_text or "") for r in caplog.records) == 2
    info = await queue.get(h.id)
    assert info is not None and info.state is JobState.COMPLETED


async def test_hooks_show_secrets_redacted(harness: Harness, queue: Queue) -> None:
    worker = harness.worker()
    seen: list[Any] = []

    @worker.on_dead
    async def page(event: JobEvent[Any]) -> None:
        seen.append((event.redacted_payload, event.payload))

    @worker.handles(login)
    async def handle(payload: Login, ctx: JobContext) -> None:
        assert payload.password.get_secret_value() == "hunter2"  # the handler gets it whole
        raise Permanent("locked out")

    harness.start(worker)
    h = await queue.enqueue(login, Login(user="ann", password=SecretStr("hunter2")))
    await wait_state(queue, h.id, JobState.FAILED)
    await wait_for(lambda: seen, what="the dead hook ran")
    [(shown, payload)] = seen
    assert shown == {"user": "ann", "password": "**********"}
    assert payload.password.get_secret_value() == "hunter2"
    info = await queue.get(h.id)
    assert info is not None and info.redacted_payload == shown


class Recorder(Observer):
    def __init__(self) -> None:
        self.started: list[tuple[str, float]] = []
        self.finished: list[tuple[str, TransitionKind | None]] = []

    def job_started(self, record: JobRecord, now: float) -> None:
        self.started.append((record.id, now - record.run_at))

    def job_finished(self, record: JobRecord, kind: TransitionKind | None, duration: float) -> None:
        self.finished.append((record.id, kind))


class Broken(Observer):
    def job_started(self, record: JobRecord, now: float) -> None:
        raise RuntimeError("observer bug")


async def test_observers_and_per_minute_counts(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    worker = harness.worker()
    recorder = Recorder()
    worker.observe(Broken())  # a failing observer changes nothing for the jobs or the others
    worker.observe(recorder)

    @worker.handles(flaky)
    async def handle(payload: Num, ctx: JobContext) -> int:
        if payload.n == 0:
            raise Permanent("zero")
        if ctx.attempt == 1:
            raise ValueError("first time")
        return payload.n

    harness.start(worker)
    handles = [await queue.enqueue(flaky, Num(n=n)) for n in (0, 1, 2)]
    for h in handles:
        await wait_state(queue, h.id, JobState.COMPLETED, JobState.FAILED)
    await wait_for(lambda: len(recorder.finished) == 5, what="observer saw every attempt")
    kinds = sorted(k.value for _, k in recorder.finished if k is not None)
    assert kinds == ["complete", "complete", "fail", "retry", "retry"]
    assert len(recorder.started) == 5 and all(w >= 0 for _, w in recorder.started)
    await harness.stop(worker)  # the last counts are written on the way out

    stats = await queue.stats(minutes=5)
    assert sum(s.completed for s in stats) == 2
    assert sum(s.retried for s in stats) == 2
    assert sum(s.failed for s in stats) == 1
    assert {s.queue for s in stats} == {flaky.queue}


async def test_a_job_that_fails_after_stalling_calls_the_dead_hook(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    # This worker serves another queue, so it only does maintenance for the job's.
    worker = harness.worker(queues=["elsewhere"], max_stalls=0)
    dead: list[tuple[str, str | None]] = []

    @worker.on_dead
    async def page(event: JobEvent[Any]) -> None:
        dead.append((event.job_id, event.error))

    @worker.handles(echo)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n

    h = await queue.enqueue(echo, Num(n=1))
    # A worker leases it, starts it alone and dies: with max_stalls=0 the rescue fails it.
    [record] = await queue.driver.job_fetch(
        FetchParams((echo.queue,), 1, "dead-worker", 5), now=clock.now()
    )
    assert record.id == h.id and record.lease_token is not None
    lease = Lease(record.id, record.lease_token, record.queue, isolated=True)
    await queue.driver.job_extend_leases([lease], 5, now=clock.now())
    harness.start(worker)
    await harness.registered(worker)
    clock.advance(6)
    await wait_state(queue, h.id, JobState.FAILED)
    await wait_for(lambda: dead, what="the dead hook ran")
    assert dead[0][0] == h.id and dead[0][1] is not None
