"""Leader-gated housekeeping and the worker heartbeat.

Any number of workers run this loop, but only the holder of the ``maintenance`` leadership does
the work each tick. Every step is idempotent and bounded, so a leader that loses its term halfway
through, or two leaders overlapping for a moment, cannot do harm, only repeat a little work.

The leadership lasts two intervals and every worker tries to take it each interval, so a leader
that dies is replaced within three intervals; the worker's default interval is a sixth of its
lease, so a new leader is rescuing within half a lease of the old one's death.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.clock import Clock
from conveyor.core.rescue import decide_rescue
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    JobRecord,
    RescueJob,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
    WorkerInfo,
)

log = logging.getLogger("conveyor.worker")

LEADERSHIP = "maintenance"
BATCH = 1000
LEADERSHIP_INTERVALS = 2.0  # how many intervals a leadership lasts without renewal


async def rescue_expired(
    driver: Driver, *, max_stalls: int, limit: int, now: float | None = None
) -> list[tuple[RescueJob, TransitionResult]]:
    """Decide about every job whose lease expired (at most ``limit``) and apply the decisions:
    what the maintenance leader does each tick."""
    rescued = await _rescue(driver, max_stalls=max_stalls, limit=limit, now=now)
    return [(decision, result) for _, decision, result in rescued]


async def _rescue(
    driver: Driver, *, max_stalls: int, limit: int, now: float | None
) -> list[tuple[JobRecord, RescueJob, TransitionResult]]:
    expired = await driver.job_expired(limit=limit, now=now)
    if not expired:
        return []
    decisions = [decide_rescue(job, max_stalls) for job in expired]
    results = await driver.job_rescue_many(decisions, now=now)
    return list(zip(expired, decisions, results, strict=True))


OnRescued = Callable[[JobRecord, RescueJob], None]
"""Told of each rescue the maintenance leader wrote (hooks and metrics learn of jobs that
failed for good after stalling, which no handler's outcome reports)."""


class Maintenance:
    def __init__(
        self,
        driver: Driver,
        *,
        worker_id: str,
        clock: Clock,
        interval: float,
        max_stalls: int,
        retention: Retention,
        on_rescued: OnRescued | None = None,
    ) -> None:
        self._driver = driver
        self._on_rescued = on_rescued
        self._worker_id = worker_id
        self._clock = clock
        self._interval = interval
        self._max_stalls = max_stalls
        self._retention = retention
        self.is_leader = False

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a failed tick is retried on the next one
                log.warning("maintenance tick failed: %s", exc)
            stop_if_cancelled()
            await asyncio.sleep(self._interval)

    async def tick(self) -> None:
        d = self._driver
        now = self._clock.now
        self.is_leader = await d.leader_acquire(
            LEADERSHIP, self._worker_id, ttl=self._interval * LEADERSHIP_INTERVALS, now=now()
        )
        if not self.is_leader:
            return
        for record, rescue, result in await _rescue(
            d, max_stalls=self._max_stalls, limit=BATCH, now=now()
        ):
            if result.status is TransitionStatus.OK:
                _log_rescue(rescue)
                if self._on_rescued is not None:
                    try:
                        self._on_rescued(record, rescue)
                    except Exception:  # telling others must not stop maintenance
                        log.exception("reporting the rescue of job %s failed", record.id)
        await d.job_promote_due(limit=BATCH, now=now())
        await d.job_prune_finished(self._retention, limit=BATCH, now=now())

    async def release(self) -> None:
        if self.is_leader:
            await self._driver.leader_release(LEADERSHIP, self._worker_id)
            self.is_leader = False


def _log_rescue(rescue: RescueJob) -> None:
    fields = {"job_id": rescue.job_id, "queue": rescue.queue, "error": rescue.error}
    match rescue.kind:
        case TransitionKind.REQUEUE:
            log.warning("job rescued", extra={"event": "rescued", "outcome": "queued", **fields})
        case TransitionKind.CANCEL:
            log.warning(
                "job cancelled after its worker lost it",
                extra={"event": "cancelled", "outcome": "cancelled", **fields},
            )
        case _:
            log.error(
                "job failed after stalling",
                extra={"event": "failed", "outcome": "stalled", **fields},
            )


# Heartbeats between two reads of the live workers (the first heartbeat reads them).
LIST_WORKERS_EVERY = 6


class Heartbeat:
    def __init__(
        self,
        driver: Driver,
        *,
        info: Callable[[], WorkerInfo],
        clock: Clock,
        interval: float,
        on_workers: Callable[[list[WorkerInfo]], None] | None = None,
    ) -> None:
        self._driver = driver
        self._info = info
        self._clock = clock
        self._interval = interval
        self._on_workers = on_workers

    async def run(self) -> None:
        beats = 0
        while True:
            try:
                now = self._clock.now()
                await self._driver.worker_heartbeat(self._info(), ttl=self._interval * 3, now=now)
                # Which names the other workers serve changes only when workers come and go:
                # read every few beats, so the fleet's heartbeats do not grow as its square.
                if self._on_workers is not None and beats % LIST_WORKERS_EVERY == 0:
                    self._on_workers(await self._driver.worker_list(now=now))
                beats += 1
            except Exception as exc:
                log.warning("worker heartbeat failed: %s", exc)
            stop_if_cancelled()
            await asyncio.sleep(self._interval)
