"""run_until_idle, assert_enqueued and make_context over the plugin's fixtures: delays and
backoff wait for the fake clock, the real worker's policy decides, payloads are validated as
on a real backend, and failures read well."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from conveyor import (
    FakeClock,
    Fixed,
    JobContext,
    JobState,
    MissingHandlers,
    PayloadValidationError,
    Queue,
    Rate,
    Retry,
    Snooze,
    SyncQueue,
    Worker,
    job,
)
from conveyor._middleware import CallNext, JobCall
from conveyor.testing import (
    TooManyJobs,
    assert_enqueued,
    make_context,
    memory_queue,
    run_until_idle,
)
from tests.conformance.worker.helpers import fast_config


class Invite(BaseModel):
    to_email: str = Field(pattern=r"^[^@]+@[^@]+$")
    tries: int = 0


send_invite = job("t.send_invite", Invite, result=str, attempts=3, backoff=Fixed(30))
reminder = job("t.reminder", Invite)
chained = job("t.chained", Invite)
limited = job("t.limited", Invite, queue="limited", rate_limit=Rate(1, per=60))
grouped = job(
    "t.grouped", Invite, queue="grouped", group_key=lambda p: p.to_email, group_rate=Rate(1, per=60)
)


def app_worker() -> tuple[Worker, list[str]]:
    """The application's worker: bound to a queue of its own, which tests never open."""
    worker = Worker(Queue.from_url("memory://the-application"))
    ran: list[str] = []

    @worker.handles(send_invite)
    async def handle(payload: Invite, ctx: JobContext) -> str:
        ran.append(f"{payload.to_email}#{ctx.attempt}")
        if payload.to_email.startswith("flaky") and ctx.attempt < 3:
            raise ConnectionError("SMTP busy")
        return payload.to_email

    @worker.handles(reminder)
    def remind(payload: Invite, ctx: JobContext) -> None:  # a sync handler: in a thread
        ran.append(f"reminder {payload.to_email}")

    return worker, ran


async def test_a_delayed_job_runs_once_the_clock_reaches_it(
    conveyor_queue: Queue, conveyor_clock: FakeClock
) -> None:
    worker, ran = app_worker()
    handle = await conveyor_queue.enqueue(
        reminder, Invite(to_email="a@example.com"), delay=timedelta(days=1)
    )
    report = await run_until_idle(conveyor_queue, worker)
    assert report.jobs == () and ran == []
    [waiting] = report.waiting
    assert waiting.id == handle.id and waiting.state is JobState.SCHEDULED
    assert report.next_run_at == pytest.approx(conveyor_clock.now() + 86400)

    conveyor_clock.advance(86399)
    assert (await run_until_idle(conveyor_queue, worker)).jobs == ()
    conveyor_clock.advance(1)
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {handle.id: JobState.COMPLETED}
    assert ran == ["reminder a@example.com"]


async def test_a_retry_runs_after_its_backoff_on_the_clock(
    conveyor_queue: Queue, conveyor_clock: FakeClock
) -> None:
    worker, ran = app_worker()
    handle = await conveyor_queue.enqueue(send_invite, Invite(to_email="flaky@example.com"))
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {handle.id: JobState.RETRYING}
    assert [(a.attempt, a.outcome) for a in report.attempts] == [(1, "retry")]
    [info] = report.jobs
    assert info.run_at.timestamp() == pytest.approx(conveyor_clock.now() + 30)
    assert "ConnectionError: SMTP busy" in (info.error or "")

    conveyor_clock.advance(29)
    assert (await run_until_idle(conveyor_queue, worker)).attempts == ()
    conveyor_clock.advance(1)
    assert (await run_until_idle(conveyor_queue, worker)).states == {handle.id: JobState.RETRYING}
    conveyor_clock.advance(30)
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {handle.id: JobState.COMPLETED}
    assert ran == ["flaky@example.com#1", "flaky@example.com#2", "flaky@example.com#3"]
    assert await handle.result(timeout=1) == "flaky@example.com"


async def test_the_workers_middleware_hooks_and_snoozes_apply(
    conveyor_queue: Queue, conveyor_clock: FakeClock
) -> None:
    worker = Worker(Queue.from_url("memory://the-application"))
    seen: list[str] = []

    @worker.handles(send_invite)
    async def handle(payload: Invite, ctx: JobContext) -> str:
        if payload.tries == 0 and "snoozed" not in seen:
            seen.append("snoozed")
            raise Snooze(timedelta(minutes=5))
        if payload.tries == 1:
            raise Retry("not yet", delay=10)
        return "ok"

    @worker.use
    async def note(call: JobCall, call_next: CallNext) -> Any:
        seen.append(f"middleware {call.definition.name}")
        return await call_next()

    @worker.on_dead
    async def dead(event: Any) -> None:
        seen.append(f"dead {event.job_id}")

    snoozed = await conveyor_queue.enqueue(send_invite, Invite(to_email="a@b.c"))
    retried = await conveyor_queue.enqueue(send_invite, Invite(to_email="a@b.c", tries=1))
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {snoozed.id: JobState.SCHEDULED, retried.id: JobState.RETRYING}
    for _ in range(2):
        conveyor_clock.advance(10)
        await run_until_idle(conveyor_queue, worker)
    assert (await retried.info()).state is JobState.FAILED
    conveyor_clock.advance(300)
    report = await run_until_idle(conveyor_queue, worker)
    assert report.states == {snoozed.id: JobState.COMPLETED}
    assert seen.count("middleware t.send_invite") == 5
    assert f"dead {retried.id}" in seen


async def test_jobs_enqueued_by_handlers_run_in_the_same_call(conveyor_queue: Queue) -> None:
    worker = Worker(conveyor_queue)
    order: list[int] = []

    @worker.handles(chained)
    async def step(payload: Invite, ctx: JobContext) -> None:
        order.append(payload.tries)
        if payload.tries < 4:
            await conveyor_queue.enqueue(chained, Invite(to_email="a@b.c", tries=payload.tries + 1))

    await conveyor_queue.enqueue(chained, Invite(to_email="a@b.c"))
    report = await run_until_idle(conveyor_queue, worker)
    assert order == [0, 1, 2, 3, 4]
    assert [info.state for info in report.jobs] == [JobState.COMPLETED] * 5


async def test_a_job_that_enqueues_itself_for_ever_is_stopped(conveyor_queue: Queue) -> None:
    worker = Worker(conveyor_queue)

    @worker.handles(chained)
    async def again(payload: Invite, ctx: JobContext) -> None:
        await conveyor_queue.enqueue(chained, payload)

    await conveyor_queue.enqueue(chained, Invite(to_email="a@b.c"))
    with pytest.raises(TooManyJobs, match=r"started \d+ attempts \(max_jobs=20\)") as raised:
        await run_until_idle(conveyor_queue, worker, max_jobs=20)
    assert len(raised.value.report.attempts) >= 20


async def test_a_rate_limited_job_waits_for_the_clock(
    conveyor_queue: Queue, conveyor_clock: FakeClock
) -> None:
    worker = Worker(conveyor_queue)
    done: list[str] = []

    @worker.handles(limited)
    async def call(payload: Invite, ctx: JobContext) -> None:
        done.append(payload.to_email)

    for name in ("a", "b"):
        await conveyor_queue.enqueue(limited, Invite(to_email=f"{name}@b.c"))
    await run_until_idle(conveyor_queue, worker)
    assert done == ["a@b.c"]
    conveyor_clock.advance(60)
    await run_until_idle(conveyor_queue, worker)
    assert done == ["a@b.c", "b@b.c"]


async def test_a_group_held_by_its_rate_waits_for_the_clock(
    conveyor_queue: Queue, conveyor_clock: FakeClock
) -> None:
    worker = Worker(conveyor_queue)
    done: list[int] = []

    @worker.handles(grouped)
    async def call(payload: Invite, ctx: JobContext) -> None:
        done.append(payload.tries)

    for tries in range(3):
        await conveyor_queue.enqueue(grouped, Invite(to_email="one@b.c", tries=tries))
    await conveyor_queue.enqueue(grouped, Invite(to_email="two@b.c", tries=9))
    report = await run_until_idle(conveyor_queue, worker)
    assert sorted(done) == [0, 9] and len(report.waiting) == 2
    conveyor_clock.advance(60)
    await run_until_idle(conveyor_queue, worker)
    assert sorted(done) == [0, 1, 9]


async def test_the_applications_worker_and_queue_are_left_alone(conveyor_queue: Queue) -> None:
    application = Queue.from_url("memory://untouched-by-tests")
    worker = Worker(application)

    @worker.handles(reminder)
    async def remind(payload: Invite, ctx: JobContext) -> None:
        pass

    await conveyor_queue.enqueue(reminder, Invite(to_email="a@b.c"))
    await run_until_idle(conveyor_queue, worker)
    assert await application.counts() == dict.fromkeys(JobState, 0)
    assert await application.workers() == []
    assert worker.queue is application and worker.stats.completed == 0


async def test_a_missing_handler_fails_as_the_worker_would(conveyor_queue: Queue) -> None:
    worker = Worker(conveyor_queue, jobs=[send_invite, reminder])

    @worker.handles(reminder)
    async def remind(payload: Invite, ctx: JobContext) -> None:
        pass

    with pytest.raises(MissingHandlers, match=r"t\.send_invite"):
        await run_until_idle(conveyor_queue, worker)


async def test_run_until_idle_wants_the_memory_driver(tmp_path: Path) -> None:
    worker, _ = app_worker()
    with pytest.raises(TypeError, match="needs a queue on the in-memory driver"):
        await run_until_idle(Queue.from_url(f"sqlite:///{tmp_path / 'q.db'}"), worker)


async def test_a_bad_payload_is_refused_as_a_real_backend_refuses_it(
    conveyor_queue: Queue, tmp_path: Path
) -> None:
    bad = Invite.model_construct(to_email="not an address", tries=0)
    refusals: list[str] = []
    async with Queue.from_url(f"sqlite:///{tmp_path / 'real.db'}") as real:
        for queue in (conveyor_queue, real):
            with pytest.raises(PayloadValidationError) as raised:
                await queue.enqueue(send_invite, bad)
            refusals.append(str(raised.value))
            # An untyped producer's payload gets past enqueue, and the worker fails it.
            await queue.enqueue_by_name("t.send_invite", {"to_email": 5})
        assert refusals[0] == refusals[1] and "to_email" in refusals[0]
        assert (await conveyor_queue.counts())[JobState.QUEUED] == 1

        worker, ran = app_worker()
        [failed] = (await run_until_idle(conveyor_queue, worker)).failed
        real_worker = Worker(real, config=fast_config(burst=True))
        real_worker.registry = worker.registry
        async with asyncio.timeout(30):
            await real_worker.run()
        [real_failed] = await real.list_jobs(state="failed")
        assert ran == []
        assert failed.error is not None and failed.error.startswith("PayloadValidationError")
        assert failed.error == real_failed.error


def test_the_sync_queue_shares_the_store_and_clock(
    conveyor_sync_queue: SyncQueue, conveyor_queue: Queue, conveyor_clock: FakeClock
) -> None:
    handle = conveyor_sync_queue.enqueue(reminder, Invite(to_email="a@b.c"), delay=60)
    [info] = assert_enqueued(conveyor_queue, reminder, count=1)
    assert info.id == handle.id
    assert info.run_at.timestamp() == pytest.approx(conveyor_clock.now() + 60)
    worker, ran = app_worker()
    conveyor_clock.advance(60)
    report = asyncio.run(run_until_idle(conveyor_sync_queue, worker))
    assert report.states == {handle.id: JobState.COMPLETED} and ran == ["reminder a@b.c"]


async def test_assert_enqueued_matches_models_and_fields(conveyor_queue: Queue) -> None:
    first = await conveyor_queue.enqueue(send_invite, Invite(to_email="a@b.c"))
    await conveyor_queue.enqueue(send_invite, Invite(to_email="x@y.z", tries=2))
    await conveyor_queue.enqueue(reminder, Invite(to_email="a@b.c"))
    assert [
        i.id for i in assert_enqueued(conveyor_queue, send_invite, Invite(to_email="a@b.c"))
    ] == [first.id]
    assert len(assert_enqueued(conveyor_queue, send_invite, count=2)) == 2
    assert len(assert_enqueued(conveyor_queue, send_invite, {"tries": 2}, count=1)) == 1
    assert assert_enqueued(conveyor_queue, send_invite, {"tries": 7}, count=0) == []


async def test_assert_enqueued_says_what_was_enqueued(conveyor_queue: Queue) -> None:
    await conveyor_queue.enqueue(send_invite, Invite(to_email="b@b.c", tries=1))
    await conveyor_queue.enqueue(send_invite, Invite(to_email="a@b.c"))
    await conveyor_queue.enqueue(reminder, Invite(to_email="a@b.c"))
    with pytest.raises(AssertionError) as raised:
        assert_enqueued(conveyor_queue, send_invite, Invite(to_email="a@b.c", tries=3))
    lines = str(raised.value).splitlines()
    assert lines[0] == (
        "expected at least 1 job 't.send_invite' with payload "
        "Invite(to_email='a@b.c', tries=3) enqueued, found 0"
    )
    assert lines[1] == "jobs 't.send_invite' enqueued (2):"
    assert lines[2].startswith("  - id=") and lines[2].endswith(
        'state=queued payload={"to_email": "b@b.c", "tries": 1}'
    )
    assert lines[3:5] == [
        "      to_email: expected 'a@b.c', got 'b@b.c'",
        "      tries: expected 3, got 1",
    ]
    assert lines[6] == "      tries: expected 3, got 0"
    assert lines[7] == "other jobs enqueued: t.reminder (1)"

    with pytest.raises(AssertionError, match=r"expected 1 job 't.send_invite' enqueued, found 2"):
        assert_enqueued(conveyor_queue, send_invite, count=1)
    with pytest.raises(AssertionError, match=r"no job 't\.limited' was enqueued"):
        assert_enqueued(conveyor_queue, limited)
    with pytest.raises(AssertionError, match="nothing was enqueued"):
        assert_enqueued(memory_queue(), limited)


async def test_a_handler_called_directly_with_a_test_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handle(payload: Invite, ctx: JobContext) -> str:
        ctx.logger.info("sending")
        ctx.progress(0.5, "half way")
        if not ctx.is_last_attempt:
            raise Retry("later")
        return f"{ctx.job_id} {ctx.queue} {ctx.attempt}/{ctx.max_attempts}"

    with pytest.raises(Retry):
        await handle(Invite(to_email="a@b.c"), make_context(send_invite))
    ctx = make_context(send_invite, attempt=3, job_id="invite-1", queue="emails")
    with caplog.at_level(logging.INFO, logger="conveyor.job"):
        assert await handle(Invite(to_email="a@b.c"), ctx) == "invite-1 emails 3/3"
    assert ctx.last_progress == 0.5
    [record] = [r for r in caplog.records if r.getMessage() == "sending"]
    assert record.name == "conveyor.job.t.send_invite"
    assert (record.job_id, record.attempt) == ("invite-1", 3)  # type: ignore[attr-defined]
    assert not ctx.cancelled.is_set()
    with pytest.raises(ValueError, match="attempt"):
        make_context(send_invite, attempt=0)


def test_the_helpers_are_quick(conveyor_sync_queue: SyncQueue) -> None:
    """Each run starts and stops a real worker; that must stay cheap enough for unit tests."""
    worker, _ = app_worker()
    conveyor_sync_queue.enqueue(reminder, Invite(to_email="a@b.c"))
    started = time.perf_counter()
    for _ in range(5):
        asyncio.run(run_until_idle(conveyor_sync_queue, worker))
    assert time.perf_counter() - started < 5
