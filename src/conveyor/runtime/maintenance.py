"""Leader-gated housekeeping and the worker heartbeat.

Any number of workers run this loop, but only the holder of the ``maintenance`` leadership does
the work each tick. Every step is idempotent and bounded, so a leader that loses its term halfway
through, or two leaders overlapping for a moment, cannot do harm, only repeat a little work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.clock import Clock
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import Retention, WorkerInfo

log = logging.getLogger("conveyor.worker")

LEADERSHIP = "maintenance"
BATCH = 1000


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
    ) -> None:
        self._driver = driver
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
            LEADERSHIP, self._worker_id, ttl=self._interval * 3, now=now()
        )
        if not self.is_leader:
            return
        rescued = await d.job_rescue_expired(max_stalls=self._max_stalls, limit=BATCH, now=now())
        for job_id in rescued.requeued:
            log.warning(
                "job rescued", extra={"event": "rescued", "job_id": job_id, "outcome": "queued"}
            )
        for job_id in rescued.cancelled:
            log.warning(
                "job cancelled after its worker lost it",
                extra={"event": "cancelled", "job_id": job_id, "outcome": "cancelled"},
            )
        for job_id in rescued.failed:
            log.error(
                "job failed after stalling",
                extra={"event": "failed", "job_id": job_id, "outcome": "stalled"},
            )
        await d.job_promote_due(limit=BATCH, now=now())
        await d.job_prune_finished(self._retention, limit=BATCH, now=now())

    async def release(self) -> None:
        if self.is_leader:
            await self._driver.leader_release(LEADERSHIP, self._worker_id)
            self.is_leader = False


class Heartbeat:
    def __init__(
        self,
        driver: Driver,
        *,
        info: Callable[[], WorkerInfo],
        clock: Clock,
        interval: float,
    ) -> None:
        self._driver = driver
        self._info = info
        self._clock = clock
        self._interval = interval

    async def run(self) -> None:
        while True:
            try:
                await self._driver.worker_heartbeat(
                    self._info(), ttl=self._interval * 3, now=self._clock.now()
                )
            except Exception as exc:
                log.warning("worker heartbeat failed: %s", exc)
            stop_if_cancelled()
            await asyncio.sleep(self._interval)
