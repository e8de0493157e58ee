"""Cron and interval schedules with real workers on every backend, driven by a fake clock:
each tick runs once however many workers declare the schedule; time zones and daylight saving
time; catch-up after downtime; overlap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conveyor import CronFireStatus, FakeClock, JobContext, JobState, Queue, Worker, job
from conveyor.core.schedule import tick_job_id
from tests.conformance.worker.helpers import Harness, Num, total_jobs, wait_for, wait_state

tally = job("test.cron_tally", Num)
T0 = 1_800_000_000  # a multiple of 60 and of 3600: a tick of every(minutes) and every(hours)
# The tests move the clock by minutes to months at a time. A fetch that was waiting for work
# when the clock moved leases with the time it read before its wait (production passes the
# backend's clock instead); a lease longer than any step keeps such a lease from counting as
# expired at once, which would run the job a second time.
LONG_LEASE = 400 * 24 * 3600.0


def new_worker(harness: Harness) -> Worker:
    return harness.worker(lease_seconds=LONG_LEASE)


def counting(worker: Worker, runs: list[int]) -> None:
    @worker.handles(tally)
    async def handle(payload: Num, ctx: JobContext) -> None:
        runs.append(payload.n)


async def started(harness: Harness, *workers: Worker) -> None:
    for worker in workers:
        harness.start(worker)
    for worker in workers:
        await harness.registered(worker)


async def looked(clock: FakeClock, *workers: Worker) -> None:
    """Wait until each worker's scheduler has dealt with everything due at the clock's time."""
    at = clock.now()
    for worker in workers:
        await wait_for(
            lambda w=worker: w.scheduler is not None and w.scheduler.caught_up_to >= at,
            what=f"worker {worker.id} looked at {at}",
        )


async def advance(clock: FakeClock, to: float, *workers: Worker) -> None:
    clock.set(to)
    await looked(clock, *workers)


async def declared(queue: Queue, name: str) -> None:
    async def listed() -> bool:
        return any(info.schedule.name == name for info in await queue.schedules())

    await wait_for(listed, what=f"schedule {name} declared")


async def test_each_tick_runs_once_with_two_workers(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    clock.set(T0 - 5)
    runs: list[int] = []
    workers = [new_worker(harness), new_worker(harness)]
    for worker in workers:
        counting(worker, runs)
        worker.every(timedelta(minutes=1), tally, Num(n=1), name="tally")
    await started(harness, *workers)
    await looked(clock, *workers)
    for n in range(4):
        await advance(clock, T0 + 60 * n + 1, *workers)
        await wait_state(queue, tick_job_id("tally", T0 + 60 * n), JobState.COMPLETED)
    assert runs == [1, 1, 1, 1]
    assert await total_jobs(queue) == 4
    (info,) = await queue.schedules()
    assert (info.last_tick, info.last_status) == (T0 + 180, CronFireStatus.FIRED)
    assert info.schedule.expression == "@every 60s" and info.schedule.queue == "default"


async def test_a_london_0130_job_fires_once_on_each_daylight_saving_change(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    worker = new_worker(harness)
    counting(worker, [])
    worker.cron("30 1 * * *", tally, Num(n=1), name="nightly", tz="Europe/London")
    spring = int(datetime(2026, 3, 28, 23, 0, tzinfo=UTC).timestamp())
    clock.set(spring)
    await started(harness, worker)
    await declared(queue, "nightly")
    # Spring: 01:30 does not exist on 2026-03-29; the job runs once, at 02:00 BST (01:00 UTC).
    # The clock moves in steps of 10 minutes through the night.
    for step in range(1, 19):
        await advance(clock, spring + 600 * step, worker)
    gap = int(datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp())
    await wait_state(queue, tick_job_id("nightly", gap), JobState.COMPLETED)
    assert await total_jobs(queue) == 1

    # Autumn: 01:30 BST is 00:30 UTC; 01:30 GMT, an hour later, must not fire again.
    autumn = int(datetime(2026, 10, 24, 23, 0, tzinfo=UTC).timestamp())
    for step in range(19):
        await advance(clock, autumn + 600 * step, worker)
    first = int(datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp())
    await wait_state(queue, tick_job_id("nightly", first), JobState.COMPLETED)
    assert await total_jobs(queue) == 2


async def test_missed_ticks_are_skipped_after_downtime_by_default(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    clock.set(T0 - 5)
    worker = new_worker(harness)
    counting(worker, [])
    worker.every(timedelta(hours=1), tally, Num(n=1), name="hourly")
    await started(harness, worker)
    await declared(queue, "hourly")
    clock.set(T0 + 1)
    await wait_state(queue, tick_job_id("hourly", T0), JobState.COMPLETED)
    await harness.stop(worker)

    clock.set(T0 + 5 * 3600 + 120)  # down for five ticks; the latest is two minutes late
    back = new_worker(harness)
    counting(back, [])
    back.every(timedelta(hours=1), tally, Num(n=1), name="hourly")
    await started(harness, back)
    await looked(clock, back)
    assert await total_jobs(queue) == 1  # nothing caught up
    clock.set(T0 + 6 * 3600 + 1)  # the next tick fires as usual
    await wait_state(queue, tick_job_id("hourly", T0 + 6 * 3600), JobState.COMPLETED)
    assert await total_jobs(queue) == 2


async def test_a_tick_a_little_late_still_fires(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    # A worker that comes back within a minute of a tick (a deploy right at 01:30) fires it.
    clock.set(T0 - 5)
    worker = new_worker(harness)
    counting(worker, [])
    worker.every(timedelta(hours=1), tally, Num(n=1), name="hourly")
    await started(harness, worker)
    await declared(queue, "hourly")
    clock.set(T0 + 1)
    await wait_state(queue, tick_job_id("hourly", T0), JobState.COMPLETED)
    await harness.stop(worker)
    clock.set(T0 + 3600 + 30)
    back = new_worker(harness)
    counting(back, [])
    back.every(timedelta(hours=1), tally, Num(n=1), name="hourly")
    await started(harness, back)
    await wait_state(queue, tick_job_id("hourly", T0 + 3600), JobState.COMPLETED)


async def test_catch_up_latest_runs_the_latest_missed_tick_once(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    clock.set(T0 - 5)
    worker = new_worker(harness)
    counting(worker, [])
    worker.every(timedelta(hours=1), tally, Num(n=1), name="hourly", catch_up="latest")
    await started(harness, worker)
    await declared(queue, "hourly")
    clock.set(T0 + 1)
    await wait_state(queue, tick_job_id("hourly", T0), JobState.COMPLETED)
    await harness.stop(worker)

    clock.set(T0 + 5 * 3600 + 1200)
    back = new_worker(harness)
    counting(back, [])
    back.every(timedelta(hours=1), tally, Num(n=1), name="hourly", catch_up="latest")
    await started(harness, back)
    await wait_state(queue, tick_job_id("hourly", T0 + 5 * 3600), JobState.COMPLETED)
    await looked(clock, back)
    assert await total_jobs(queue) == 2  # the latest missed tick, not all five


async def test_a_new_schedule_does_not_fire_a_tick_from_before_it_existed(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    clock.set(T0 + 30)
    worker = new_worker(harness)
    counting(worker, [])
    worker.every(timedelta(minutes=1), tally, Num(n=1), name="fresh", catch_up="latest")
    await started(harness, worker)
    await declared(queue, "fresh")
    await looked(clock, worker)
    assert await total_jobs(queue) == 0
    clock.set(T0 + 61)
    await wait_state(queue, tick_job_id("fresh", T0 + 60), JobState.COMPLETED)


async def test_overlap_skip_skips_ticks_while_the_previous_run_is_active(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    clock.set(T0 - 5)
    release = asyncio.Event()
    slow = job("test.cron_slow", Num)
    worker = new_worker(harness)

    @worker.handles(slow)
    async def handle(payload: Num, ctx: JobContext) -> None:
        await release.wait()

    worker.every(timedelta(minutes=1), slow, Num(n=1), name="slow", overlap="skip")
    await started(harness, worker)
    await declared(queue, "slow")
    clock.set(T0 + 1)
    await wait_state(queue, tick_job_id("slow", T0), JobState.ACTIVE)
    clock.set(T0 + 61)

    async def skipped() -> bool:
        (info,) = await queue.schedules()
        return info.last_tick == T0 + 60 and info.last_status is CronFireStatus.SKIPPED

    await wait_for(skipped, what="tick T0+60 skipped")
    assert await queue.get(tick_job_id("slow", T0 + 60)) is None
    release.set()
    await wait_state(queue, tick_job_id("slow", T0), JobState.COMPLETED)
    clock.set(T0 + 121)
    await wait_state(queue, tick_job_id("slow", T0 + 120), JobState.COMPLETED)


async def test_a_tick_costs_one_round_trip_per_process(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    calls: list[str] = []
    queue.driver.subscribe(lambda event: calls.append(event.operation))
    clock.set(T0 - 5)
    workers = [new_worker(harness), new_worker(harness)]
    for worker in workers:
        counting(worker, [])
        worker.every(timedelta(minutes=1), tally, Num(n=1), name="tally")
        worker.every(timedelta(hours=1), tally, Num(n=2), name="hourly")
    await started(harness, *workers)
    await looked(clock, *workers)  # both declared their schedules before the first tick
    for n in range(5):
        await advance(clock, T0 + 60 * n + 1, *workers)
    # Each worker: one declaration at start, then one fire per tick it saw (five of the
    # minutely schedule, one of the hourly one at T0); nothing while no tick is due.
    assert calls.count("cron_register") == 2
    assert calls.count("cron_fire") == 2 * (5 + 1)
    assert await total_jobs(queue) == 6


kept = job("test.cron_kept", Num, keep_completed=timedelta(minutes=10))


async def test_a_ticks_job_has_its_definitions_retention(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    clock.set(T0 - 5)
    worker = new_worker(harness)

    @worker.handles(kept)
    async def handle(payload: Num, ctx: JobContext) -> None:
        return None

    worker.every(timedelta(minutes=1), kept, Num(n=1), name="kept")
    await started(harness, worker)
    await looked(clock, worker)
    await advance(clock, T0 + 1, worker)
    info = await wait_state(queue, tick_job_id("kept", T0), JobState.COMPLETED)
    assert info.expires_at is not None and info.finished_at is not None
    assert info.expires_at - info.finished_at == timedelta(minutes=10)
