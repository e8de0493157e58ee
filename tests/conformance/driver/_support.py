"""Shared helpers of the driver conformance suite: a fixed epoch and terse job builders.

Every test passes an explicit ``now`` built from :data:`T0`, so time moves only when a test adds
to it and nothing sleeps to wait for a lease or a schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobRecord,
    NewJob,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
)
from conveyor.runtime.maintenance import rescue_expired

T0: Final = 1_700_000_000.0
QUEUE: Final = "default"
LEASE: Final = 30.0


def new_job(
    job_id: str,
    *,
    queue: str = QUEUE,
    name: str = "test.job",
    payload: bytes = b'{"n": 1}',
    priority: int = 0,
    max_attempts: int = 3,
    run_at: float | None = None,
    delay: float = 0.0,
    keep_completed: float | None = None,
    keep_failed: float | None = None,
) -> NewJob:
    return NewJob(
        id=job_id,
        queue=queue,
        name=name,
        payload=payload,
        priority=priority,
        max_attempts=max_attempts,
        run_at=run_at,
        delay=delay,
        keep_completed=keep_completed,
        keep_failed=keep_failed,
    )


async def insert(driver: Driver, *ids: str, now: float = T0, **options: Any) -> None:
    await driver.job_insert_many([new_job(i, **options) for i in ids], now=now)


async def fetch(
    driver: Driver,
    *,
    now: float = T0,
    limit: int = 10,
    queues: Sequence[str] = (QUEUE,),
    worker_id: str = "worker-1",
    lease: float = LEASE,
) -> list[JobRecord]:
    return await driver.job_fetch(FetchParams(tuple(queues), limit, worker_id, lease), now=now)


async def fetch_one(driver: Driver, *, now: float = T0, **options: Any) -> JobRecord:
    jobs = await fetch(driver, now=now, limit=1, **options)
    assert len(jobs) == 1, f"expected one runnable job, got {jobs}"
    return jobs[0]


async def finish(
    driver: Driver,
    job: JobRecord,
    kind: TransitionKind = TransitionKind.COMPLETE,
    *,
    now: float = T0,
    token: str | None = None,
    retention: Retention | None = None,
    **fields: Any,
) -> TransitionResult:
    token = token if token is not None else job.lease_token
    assert token is not None
    [result] = await driver.job_finish_many(
        [FinishJob(job.id, token, kind, **fields)],
        retention=retention if retention is not None else Retention(),
        now=now,
    )
    return result


async def rescue(
    driver: Driver, *, now: float, max_stalls: int = 3, limit: int = 10
) -> dict[str, list[str]]:
    """What the maintenance leader does: decide about every expired lease (the core's policy)
    and apply it. The ids written, by the kind of transition the rescuer chose."""
    done: dict[str, list[str]] = {"requeue": [], "fail": [], "cancel": []}
    for decision, result in await rescue_expired(
        driver, max_stalls=max_stalls, limit=limit, now=now
    ):
        if result.status is TransitionStatus.OK:
            done[decision.kind.value].append(decision.job_id)
    return done


async def get(driver: Driver, job_id: str) -> JobRecord:
    [job] = await driver.job_get_many([job_id])
    assert job is not None, f"job {job_id!r} does not exist"
    return job


async def exists(driver: Driver, job_id: str) -> bool:
    [job] = await driver.job_get_many([job_id])
    return job is not None
