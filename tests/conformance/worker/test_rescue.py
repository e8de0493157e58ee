"""At-least-once with fencing: dead workers' jobs are rescued, poison pills fail, and a worker
that lost its lease cannot overwrite the job."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conveyor import FakeClock, JobContext, JobState, Queue, Retention, job
from conveyor.backends.registry import driver_for_url
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobRecord,
    Lease,
    TransitionKind,
    TransitionStatus,
)
from conveyor.runtime.maintenance import rescue_expired
from tests.conformance.worker.helpers import Harness, Num, get_info, wait_for, wait_state

work = job("test.work", Num, result=str)


async def lease_as_dead_worker(
    queue: Queue,
    clock: FakeClock,
    *,
    worker_id: str = "dead-worker",
    lease_seconds: float = 5,
    isolated: bool = False,
) -> JobRecord:
    """Claim the next job the way a worker does, then never touch it again (SIGKILL). With
    ``isolated``, the worker had started it alone first, as workers run a job lost before."""
    records = await queue.driver.job_fetch(
        FetchParams(("default",), 1, worker_id, lease_seconds), now=clock.now()
    )
    assert len(records) == 1
    record = records[0]
    if isolated:
        assert record.lease_token is not None
        lease = Lease(record.id, record.lease_token, record.queue, isolated=True)
        await queue.driver.job_extend_leases([lease], lease_seconds, now=clock.now())
    return record


async def test_a_dead_workers_job_is_rescued_and_completed(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    attempts: list[int] = []
    worker = harness.worker()

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        attempts.append(ctx.attempt)
        return "rescued"

    handle_ = await queue.enqueue(work, Num(n=1))
    dead = await lease_as_dead_worker(queue, clock)
    assert dead.id == handle_.id
    assert dead.attempt == 1

    harness.start(worker)
    await harness.registered(worker)
    info = await get_info(queue, handle_.id)
    assert info.state is JobState.ACTIVE  # the lease has not expired: nobody touches it
    assert info.worker_id == "dead-worker"

    clock.advance(6)
    assert await handle_.result(timeout=10) == "rescued"
    info = await get_info(queue, handle_.id)
    assert info.stalls == 1
    assert info.attempt == 1  # the stalled attempt was given back
    assert attempts == [1]


async def test_a_job_that_keeps_stalling_while_alone_fails(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    # This worker serves another queue, so it only does maintenance for the "default" one.
    worker = harness.worker(queues=["elsewhere"], max_stalls=1)
    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(worker)

    await lease_as_dead_worker(queue, clock, worker_id="dead-1")
    clock.advance(6)
    info = await wait_state(queue, handle_.id, JobState.QUEUED)
    assert info.stalls == 1
    assert info.attempt == 0

    # Lost again beside other jobs: still no evidence against it.
    await lease_as_dead_worker(queue, clock, worker_id="dead-2")
    clock.advance(6)
    await wait_for(lambda: _stalls(queue, handle_.id, 2), what="second loss counted")
    assert (await get_info(queue, handle_.id)).state is JobState.QUEUED

    # Lost while it ran alone: evidence, and over max_stalls.
    await lease_as_dead_worker(queue, clock, worker_id="dead-3", isolated=True)
    clock.advance(6)
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.stalls == 3
    assert info.error is not None
    assert "max_stalls=1" in info.error


async def _stalls(queue: Queue, job_id: str, stalls: int) -> bool:
    info = await queue.get(job_id)
    return info is not None and info.stalls == stalls and info.state is JobState.QUEUED


async def test_max_stalls_zero_fails_on_the_first_loss_while_running_alone(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    calls = 0
    worker = harness.worker(max_stalls=0)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        nonlocal calls
        calls += 1
        return "ran"

    lost_once = await queue.enqueue(work, Num(n=1), priority=-1)
    await lease_as_dead_worker(queue, clock)
    handle_ = await queue.enqueue(work, Num(n=2), priority=-1)
    await lease_as_dead_worker(queue, clock, isolated=True)
    harness.start(worker)
    clock.advance(6)
    info = await wait_state(queue, handle_.id, JobState.FAILED)
    assert info.stalls == 1
    # The job lost beside others is not held to it: it runs (alone) and completes.
    assert await lost_once.result(timeout=10) == "ran"
    assert calls == 1


async def test_a_stale_workers_late_completion_is_refused(
    harness: Harness,
    queue: Queue,
    clock: FakeClock,
    backend_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    release_stale = asyncio.Event()
    stale_started = asyncio.Event()
    # The stale worker never renews its lease: as if its process were frozen.
    stale = harness.worker(concurrency=1, lease_seconds=5, lease_renew_interval=3600)

    @stale.handles(work)
    async def stale_handler(payload: Num, ctx: JobContext) -> str:
        stale_started.set()
        await release_stale.wait()
        return "stale"

    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(stale)
    await asyncio.wait_for(stale_started.wait(), 10)
    held = (await queue.driver.job_get_many([handle_.id]))[0]
    assert held is not None and held.worker_id == stale.id and held.lease_token

    other_queue = Queue.from_url(backend_url, clock=clock)
    try:
        live = harness.worker(other_queue)

        @live.handles(work)
        async def live_handler(payload: Num, ctx: JobContext) -> str:
            return "live"

        harness.start(live)
        clock.advance(6)  # the stale worker's lease expires; maintenance rescues the job
        assert await handle_.result(timeout=10) == "live"

        release_stale.set()
        await harness.stop(stale)  # flushes its completer: the late completion is written
        info = await get_info(queue, handle_.id)
        assert info.state is JobState.COMPLETED
        assert info.result == "live"
        assert stale.stats.completed == 0
        assert stale.stats.lease_lost == 1
        assert any(getattr(r, "event", None) == "lease_lost" for r in caplog.records)

        # The fence itself: the old token can change nothing.
        (late,) = await queue.driver.job_finish_many(
            [FinishJob(handle_.id, held.lease_token, TransitionKind.FAIL, error="late")],
            retention=Retention(),
            now=clock.now(),
        )
        assert late.status is TransitionStatus.LEASE_LOST
        assert (await get_info(queue, handle_.id)).result == "live"
    finally:
        await harness.aclose()
        await other_queue.close()


async def test_a_lost_lease_reported_by_the_lease_keeper_interrupts_the_running_job(
    harness: Harness, queue: Queue, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    started = asyncio.Event()
    interrupted: list[bool] = []
    runs = 0
    # The worker's own clock never moves. Its lease keeper renews every 50 ms, stamping the
    # lease with that clock: no renewal can push the lease past the moment the test rescues at,
    # and the rescued job (due at the rescue time) is never due for this worker, which is full
    # anyway (concurrency 1). So only the lease keeper's report can stop the stale attempt.
    worker_clock = FakeClock(clock.now())
    worker = harness.worker(clock=worker_clock, concurrency=1, lease_seconds=5)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        nonlocal runs
        runs += 1
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.append(ctx.cancelled.is_set())
            raise
        return "unreachable"

    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(worker)
    await asyncio.wait_for(started.wait(), 10)
    held = (await queue.driver.job_get_many([handle_.id]))[0]
    assert held is not None and held.worker_id == worker.id

    # Our lease expires (say the lease keeper could not reach the backend), the job is rescued
    # and another worker leases it at once.
    clock.advance(6)
    rescued = await rescue_expired(queue.driver, max_stalls=5, limit=10, now=clock.now())
    assert [(r.job_id, r.kind, w.status) for r, w in rescued] == [
        (handle_.id, TransitionKind.REQUEUE, TransitionStatus.OK)
    ]
    other = await lease_as_dead_worker(queue, clock, worker_id="other-worker", lease_seconds=3600)
    assert other.id == handle_.id and other.lease_token != held.lease_token

    await wait_for(lambda: interrupted, what="the stale attempt was interrupted")
    assert interrupted == [True]  # CancelledError, with ctx.cancelled already set
    await wait_for(lambda: worker.stats.lease_lost == 1, what="lease_lost counted")
    await harness.stop(worker)  # flushes the completer: anything the stale attempt sent is written

    assert runs == 1
    s = worker.stats
    assert (s.completed, s.retried, s.failed, s.snoozed, s.cancelled, s.requeued) == (0,) * 6
    assert s.lease_lost == 1
    assert not any("outcome discarded" in r.getMessage() for r in caplog.records)
    now = (await queue.driver.job_get_many([handle_.id]))[0]
    assert now is not None
    assert now.state is JobState.ACTIVE
    assert now.worker_id == "other-worker" and now.lease_token == other.lease_token
    assert now.attempt == 1 and now.stalls == 1


async def test_a_job_fetched_again_stops_its_stale_attempt_without_disturbing_the_new_one(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    started = asyncio.Event()
    interrupted: list[bool] = []
    runs = 0
    # The lease keeper reads the same fake clock: were it to renew between the advance and the
    # rescue below, nothing would expire. It never renews here, so only the re-fetch (``_start``)
    # can notice that the first attempt's lease was lost. The worker's own clock stays put, so
    # its maintenance never sees the lease expire: the rescue below is the test's alone (the
    # worker's maintenance would otherwise race it, and on a backend whose rescue takes several
    # round trips it would often win).
    worker_clock = FakeClock(clock.now())
    worker = harness.worker(clock=worker_clock, lease_seconds=5, lease_renew_interval=3600)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        nonlocal runs
        runs += 1
        if runs > 1:
            return "second run"
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.append(ctx.cancelled.is_set())
            raise
        return "unreachable"

    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(worker)
    await asyncio.wait_for(started.wait(), 10)
    # Our lease expires and the job is rescued; this same worker then fetches it again. The
    # stale attempt must be stopped, and must not disturb the new one.
    clock.advance(6)
    rescued = await rescue_expired(queue.driver, max_stalls=5, limit=10, now=clock.now())
    assert [(r.job_id, r.kind) for r, _ in rescued] == [(handle_.id, TransitionKind.REQUEUE)]
    assert await handle_.result(timeout=10) == "second run"
    await wait_for(lambda: interrupted, what="the stale attempt was interrupted")
    assert interrupted == [True]
    await wait_for(lambda: worker.stats.lease_lost == 1, what="lease_lost counted")
    assert runs == 2
    assert worker.stats.completed == 1
    info = await get_info(queue, handle_.id)
    assert info.state is JobState.COMPLETED
    assert info.stalls == 1


class LateReplies:
    """A real driver whose fetch replies are held back ``delay`` seconds after the fetch ran, as
    a network partition that heals late delivers them (the store itself is untouched)."""

    def __init__(self, url: str, delay: float) -> None:
        self._driver = driver_for_url(url)
        self.delay = delay
        self.replied = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._driver, name)

    async def job_fetch(self, params: FetchParams, **kwargs: object) -> list[JobRecord]:
        records = await self._driver.job_fetch(params, **kwargs)  # type: ignore[arg-type]
        if records:
            await asyncio.sleep(self.delay)
            self.replied.set()
        return records


async def test_a_fetch_reply_that_arrives_after_its_lease_ran_out_is_not_run(
    harness: Harness, queue: Queue, clock: FakeClock, backend_url: str
) -> None:
    """Before: a worker cut off from the store received its pending fetch reply when the
    connection healed and started the job long after that lease had expired, after another
    worker had completed it: the write was fenced, but the side effect ran twice."""
    late = LateReplies(backend_url, delay=1.5)
    cut_off_queue = Queue(late, clock=clock)  # type: ignore[arg-type]
    ran: list[str] = []
    cut_off = harness.worker(cut_off_queue, lease_seconds=1.0, concurrency=1)

    @cut_off.handles(work)
    async def never(payload: Num, ctx: JobContext) -> str:
        ran.append(ctx.job_id)
        return "late"

    handle_ = await queue.enqueue(work, Num(n=1))
    harness.start(cut_off)
    await wait_for(lambda: _is_active(queue, handle_.id), what="the cut-off worker leased the job")
    other = harness.worker(queues=["default"])

    @other.handles(work)
    async def live(payload: Num, ctx: JobContext) -> str:
        return "live"

    harness.start(other)
    clock.advance(2)  # the lease ran out; the other worker's maintenance rescues and runs it
    assert await handle_.result(timeout=10) == "live"
    await asyncio.wait_for(late.replied.wait(), 10)
    await harness.stop(cut_off)
    assert ran == []
    info = await get_info(queue, handle_.id)
    assert (info.state, info.result) == (JobState.COMPLETED, "live")
    await cut_off_queue.close()


async def _is_active(queue: Queue, job_id: str) -> bool:
    info = await queue.get(job_id)
    return info is not None and info.state is JobState.ACTIVE


async def test_a_job_lost_before_runs_alone_and_is_marked_so(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    """A job that was lost may be what killed its worker: it runs with nothing beside it, and
    the backend knows (a loss now would be evidence against it)."""
    suspect = await queue.enqueue(work, Num(n=0), priority=-1)
    await lease_as_dead_worker(queue, clock)
    clock.advance(6)
    await rescue_expired(queue.driver, max_stalls=2, limit=10, now=clock.now())
    others = [await queue.enqueue(work, Num(n=n)) for n in range(1, 7)]
    running: set[str] = set()
    beside_suspect: list[set[str]] = []
    marked: list[bool] = []
    worker = harness.worker(concurrency=4)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        running.add(ctx.job_id)
        try:
            if ctx.job_id == suspect.id:
                marked.append((await get_info_record(queue, ctx.job_id)).isolated)
                await asyncio.sleep(0.2)
                beside_suspect.append(running - {ctx.job_id})
            else:
                await asyncio.sleep(0.05)
            return "ok"
        finally:
            running.discard(ctx.job_id)

    harness.start(worker)
    assert await suspect.result(timeout=10) == "ok"
    assert [await h.result(timeout=10) for h in others] == ["ok"] * 6
    assert (marked, beside_suspect) == ([True], [set()])


async def get_info_record(queue: Queue, job_id: str) -> JobRecord:
    (record,) = await queue.driver.job_get_many([job_id])
    assert record is not None
    return record


async def test_suspects_fetched_together_each_run_alone_and_none_is_hoarded(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    """Before: a worker kept every suspect of one fetch leased while they waited their turn,
    one after another; now it keeps one and hands the others back at once."""
    suspects = [await queue.enqueue(work, Num(n=n), priority=-1) for n in (100, 101, 102)]
    for _ in suspects:
        await lease_as_dead_worker(queue, clock)
    clock.advance(6)
    await rescue_expired(queue.driver, max_stalls=2, limit=10, now=clock.now())
    others = [await queue.enqueue(work, Num(n=n)) for n in range(1, 5)]
    running: set[str] = set()
    beside: dict[str, set[str]] = {}
    worker = harness.worker(concurrency=4)

    @worker.handles(work)
    async def handle(payload: Num, ctx: JobContext) -> str:
        running.add(ctx.job_id)
        try:
            await asyncio.sleep(0.05)
            if payload.n >= 100:
                beside[ctx.job_id] = running - {ctx.job_id}
            return "ok"
        finally:
            running.discard(ctx.job_id)

    harness.start(worker)
    assert [await h.result(timeout=10) for h in suspects + others] == ["ok"] * 7
    assert beside == {s.id: set() for s in suspects}
    for s in suspects:
        record = await get_info_record(queue, s.id)
        assert (record.attempt, record.stalls) == (1, 1)  # handing back spent no attempt
