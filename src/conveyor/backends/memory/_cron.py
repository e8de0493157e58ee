"""Schedules in the memory store: the reference model of ``cron_register``, ``cron_fire`` and
``cron_list``. A fire runs under the store's lock, so checking the recorded tick, recording the
new one and inserting its job are one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from conveyor.drivers.common import (
    check_cron_fire,
    check_cron_schedules,
    check_now,
    resolve_now,
)
from conveyor.drivers.records import (
    WAITING_STATES,
    CronFire,
    CronFireResult,
    CronFireStatus,
    CronInfo,
    CronSchedule,
    InsertResult,
    JobRecord,
    JobState,
    NewJob,
)

Insert = Callable[[Sequence[NewJob], float | None], Awaitable[list[InsertResult]]]


def register(
    crons: dict[str, CronInfo], schedules: Sequence[CronSchedule], now: float | None
) -> dict[str, int | None]:
    check_now(now)
    check_cron_schedules(schedules)
    at = resolve_now(now)
    recorded: dict[str, int | None] = {}
    for schedule in schedules:
        known = crons.get(schedule.name)
        if known is None:
            crons[schedule.name] = CronInfo(schedule, registered_at=at)
        else:
            crons[schedule.name] = dataclasses.replace(known, schedule=schedule, registered_at=at)
        recorded[schedule.name] = crons[schedule.name].last_tick
    return recorded


async def fire(
    crons: dict[str, CronInfo],
    jobs: dict[str, JobRecord],
    request: CronFire,
    now: float | None,
    insert: Insert,
) -> CronFireResult:
    """Call with the store's lock held; ``insert`` is the driver's own (it takes the lock again:
    it is reentrant, and the insert never yields to the event loop)."""
    check_now(now)
    check_cron_fire(request)
    at = resolve_now(now)
    known = crons.get(request.name)
    if known is None:  # fired before any worker registered it: record it bare
        schedule = CronSchedule(request.name, request.job.queue, request.job.name, "")
        known = CronInfo(schedule, registered_at=at)
    if known.last_tick is not None and request.tick <= known.last_tick:
        return CronFireResult(CronFireStatus.ALREADY, known.last_tick)
    status = CronFireStatus.FIRED
    if request.skip_if_running and _running(known, jobs):
        status = CronFireStatus.SKIPPED
    else:
        await insert([request.job], now)
    crons[request.name] = dataclasses.replace(
        known,
        last_tick=request.tick,
        last_status=status,
        last_fired_at=at,
        last_job_id=request.job.id if status is CronFireStatus.FIRED else known.last_job_id,
    )
    return CronFireResult(status, request.tick)


def _running(known: CronInfo, jobs: dict[str, JobRecord]) -> bool:
    job = jobs.get(known.last_job_id) if known.last_job_id else None
    return job is not None and (job.state in WAITING_STATES or job.state is JobState.ACTIVE)


def listing(crons: dict[str, CronInfo]) -> list[CronInfo]:
    return [crons[name] for name in sorted(crons) if crons[name].schedule.expression]
