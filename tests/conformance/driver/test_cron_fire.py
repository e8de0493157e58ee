"""cron_register, cron_fire and cron_list: a tick fires once, however many callers fire it."""

from __future__ import annotations

import asyncio

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.common import cron_job_id
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    CronFire,
    CronFireStatus,
    CronSchedule,
    JobState,
    TransitionKind,
)

from ._support import QUEUE, T0, fetch_one, finish, new_job

TICK = 1_700_000_100
SCHEDULE = CronSchedule("nightly", QUEUE, "test.job", "30 1 * * *", "Europe/London")


def tick_fire(tick: int, *, name: str = "nightly", skip_if_running: bool = False) -> CronFire:
    return CronFire(name, tick, new_job(cron_job_id(name, tick)), skip_if_running)


async def test_register_lists_the_schedule_and_returns_its_recorded_tick(driver: Driver) -> None:
    assert await driver.cron_list() == []
    assert await driver.cron_register([SCHEDULE], now=T0) == {"nightly": None}
    (info,) = await driver.cron_list()
    assert info.schedule == SCHEDULE
    assert info.registered_at == T0
    assert (info.last_tick, info.last_status, info.last_fired_at) == (None, None, None)

    await driver.cron_fire(tick_fire(TICK), now=T0 + 100)
    changed = CronSchedule("nightly", QUEUE, "test.job", "@every 60s", "UTC", "latest", "skip")
    assert await driver.cron_register([changed], now=T0 + 200) == {"nightly": TICK}
    (info,) = await driver.cron_list()
    assert info.schedule == changed  # the latest declaration wins; what ticks recorded is kept
    assert info.registered_at == T0 + 200
    assert (info.last_tick, info.last_status) == (TICK, CronFireStatus.FIRED)
    assert info.last_fired_at == T0 + 100
    assert info.last_job_id == cron_job_id("nightly", TICK)


async def test_a_tick_inserts_its_job_once(driver: Driver) -> None:
    await driver.cron_register([SCHEDULE], now=T0)
    first = await driver.cron_fire(tick_fire(TICK), now=T0)
    assert (first.status, first.last_tick) == (CronFireStatus.FIRED, TICK)
    again = await driver.cron_fire(tick_fire(TICK), now=T0 + 1)
    assert (again.status, again.last_tick) == (CronFireStatus.ALREADY, TICK)
    older = await driver.cron_fire(tick_fire(TICK - 60), now=T0 + 1)
    assert (older.status, older.last_tick) == (CronFireStatus.ALREADY, TICK)
    (job,) = await driver.job_get_many([cron_job_id("nightly", TICK)])
    assert job is not None and job.state is JobState.QUEUED and job.name == "test.job"
    assert (await driver.job_get_many([cron_job_id("nightly", TICK - 60)])) == [None]
    assert sum((await driver.job_count_by_state()).values()) == 1


async def test_concurrent_fires_of_one_tick_insert_one_job(driver: Driver) -> None:
    # As workers do: each on its own connection, the schedule unregistered or registered.
    others = [driver.connect_another() for _ in range(3)]
    for other in others:
        await other.open()
    try:
        for n, tick in enumerate((TICK, TICK + 60)):
            callers = [driver, *others] * 2
            results = await asyncio.gather(
                *(caller.cron_fire(tick_fire(tick), now=T0 + n) for caller in callers)
            )
            assert [r.status for r in results].count(CronFireStatus.FIRED) == 1
            assert {r.last_tick for r in results} == {tick}
            await driver.cron_register([SCHEDULE], now=T0)
    finally:
        for other in others:
            await other.close()
    assert sum((await driver.job_count_by_state()).values()) == 2


async def test_a_tick_fired_early_waits_for_its_run_time(driver: Driver) -> None:
    # A worker whose clock runs ahead fires a tick before it is due: the job waits for it.
    fire = CronFire("nightly", TICK, new_job(cron_job_id("nightly", TICK), run_at=TICK))
    assert (await driver.cron_fire(fire, now=TICK - 1)).status is CronFireStatus.FIRED
    (job,) = await driver.job_get_many([cron_job_id("nightly", TICK)])
    assert job is not None and job.state is JobState.SCHEDULED and job.run_at == TICK


async def test_skip_if_running_skips_ticks_while_the_last_job_is_unfinished(
    driver: Driver,
) -> None:
    await driver.cron_register([SCHEDULE], now=T0)
    assert (await driver.cron_fire(tick_fire(TICK, skip_if_running=True), now=T0)).status is (
        CronFireStatus.FIRED
    )
    # Queued, then active: the next ticks are skipped, and recorded as handled.
    skipped = await driver.cron_fire(tick_fire(TICK + 60, skip_if_running=True), now=T0 + 60)
    assert (skipped.status, skipped.last_tick) == (CronFireStatus.SKIPPED, TICK + 60)
    job = await fetch_one(driver, now=T0 + 61)
    skipped = await driver.cron_fire(tick_fire(TICK + 120, skip_if_running=True), now=T0 + 120)
    assert skipped.status is CronFireStatus.SKIPPED
    (info,) = await driver.cron_list()
    assert (info.last_tick, info.last_status) == (TICK + 120, CronFireStatus.SKIPPED)
    assert info.last_job_id == cron_job_id("nightly", TICK)
    # Finished: the next tick fires; a skipped tick never inserted a job.
    await finish(driver, job, TransitionKind.COMPLETE, now=T0 + 130)
    fired = await driver.cron_fire(tick_fire(TICK + 180, skip_if_running=True), now=T0 + 180)
    assert fired.status is CronFireStatus.FIRED
    ids = [cron_job_id("nightly", TICK + n) for n in (0, 60, 120, 180)]
    found = await driver.job_get_many(ids)
    assert [j is not None for j in found] == [True, False, False, True]


async def test_overlap_allowed_fires_beside_an_unfinished_job(driver: Driver) -> None:
    await driver.cron_fire(tick_fire(TICK), now=T0)
    assert (await driver.cron_fire(tick_fire(TICK + 60), now=T0 + 60)).status is (
        CronFireStatus.FIRED
    )
    assert (await driver.job_count_by_state())[JobState.QUEUED] == 2


async def test_schedules_are_apart_and_listed_by_name(driver: Driver) -> None:
    other = CronSchedule("hourly", "reports", "report.build", "0 * * * *")
    await driver.cron_register([SCHEDULE, other], now=T0)
    fire = CronFire("hourly", TICK, new_job(cron_job_id("hourly", TICK), queue="reports"))
    assert (await driver.cron_fire(fire, now=T0)).status is CronFireStatus.FIRED
    assert (await driver.cron_fire(tick_fire(TICK), now=T0)).status is CronFireStatus.FIRED
    infos = await driver.cron_list()
    assert [i.schedule.name for i in infos] == ["hourly", "nightly"]
    assert [i.last_tick for i in infos] == [TICK, TICK]
    (job,) = await driver.job_get_many([cron_job_id("hourly", TICK)])
    assert job is not None and job.queue == "reports"


async def test_bad_fires_are_refused_before_anything_is_written(driver: Driver) -> None:
    with pytest.raises(InvalidArgument, match="must have id"):
        await driver.cron_fire(CronFire("nightly", TICK, new_job("other")), now=T0)
    with pytest.raises(InvalidArgument, match="whole epoch seconds"):
        await driver.cron_fire(CronFire("nightly", -1, new_job("cron:nightly:-1")), now=T0)
    with pytest.raises(InvalidArgument, match="priority"):
        job = new_job(cron_job_id("nightly", TICK), priority=10**9)
        await driver.cron_fire(CronFire("nightly", TICK, job), now=T0)
    with pytest.raises(InvalidArgument, match="overlap is 'allow' or 'skip', got 'no'"):
        await driver.cron_register([CronSchedule("x", QUEUE, "j", "* * * * *", overlap="no")])
    assert await driver.cron_list() == []
    assert sum((await driver.job_count_by_state()).values()) == 0


async def test_a_ticks_job_keeps_its_own_retention(driver: Driver) -> None:
    # A schedule's job carries its definition's retention, as an enqueued job does.
    await driver.cron_register([SCHEDULE], now=T0)
    job = new_job(cron_job_id("nightly", TICK), keep_completed=60.0, keep_failed=3600.0)
    await driver.cron_fire(CronFire("nightly", TICK, job), now=T0)
    (stored,) = await driver.job_get_many([job.id])
    assert stored is not None and (stored.keep_completed, stored.keep_failed) == (60.0, 3600.0)
