"""Counts a worker's finished attempts per queue and minute, and adds them to the backend's
per-minute counters every few seconds (what the dashboard's last hour is drawn from)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from conveyor.core.clock import Clock
from conveyor.drivers.common import STATS_KEEP_MINUTES, STATS_MAX_SAMPLES
from conveyor.drivers.records import JobRecord, QueueStats, TransitionKind
from conveyor.engine import Engine
from conveyor.runtime.observers import Observer

log = logging.getLogger("conveyor.worker")

FLUSH_SECONDS: Final = 5.0
_COUNTED: Final = {
    TransitionKind.COMPLETE: 0,
    TransitionKind.RETRY: 1,
    TransitionKind.FAIL: 2,
}


class ThroughputCounter(Observer):
    """An observer of written transitions; :meth:`run` flushes its counts until stopped.

    Counts that cannot be written (the backend is down) are kept and added to the next flush,
    within a bound: at most ``STATS_MAX_SAMPLES`` buckets, minutes older than the kept window
    dropped. They are statistics, not jobs: losing a few seconds of them to a crash is fine."""

    def __init__(self, driver: Engine, clock: Clock, stopping: asyncio.Event) -> None:
        self._driver = driver
        self._clock = clock
        self._stopping = stopping
        self._counts: dict[tuple[str, int], list[int]] = {}
        self._writing: asyncio.Future[None] | None = None  # the last flush's write

    def _now(self) -> float:
        now = self._clock.now()
        return time.time() if now is None else now

    def job_finished(self, record: JobRecord, kind: TransitionKind | None, duration: float) -> None:
        column = None if kind is None else _COUNTED.get(kind)
        if column is None:
            return
        key = (record.queue, int(self._now() // 60))
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= STATS_MAX_SAMPLES:
                return  # the backend has been unreachable for long: keep what we have
            counts = self._counts[key] = [0, 0, 0]
        counts[column] += 1

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._stopping.wait()
            except TimeoutError:
                pass
            await self.flush()

    async def flush(self) -> None:
        """Write the counts kept so far. The write is never abandoned half-way: shutdown cancels
        :meth:`run` (possibly during its flush) and then flushes once more, so a write in flight
        goes on, and the next flush waits for it first: the counts it took are neither lost
        nor written twice."""
        writing = self._writing
        if writing is not None and not writing.done():
            await asyncio.shield(writing)
        if not self._counts:
            return
        taken, self._counts = self._counts, {}
        writing = self._writing = asyncio.ensure_future(self._write(taken))
        await asyncio.shield(writing)

    async def _write(self, taken: dict[tuple[str, int], list[int]]) -> None:
        oldest = int(self._now() // 60) - STATS_KEEP_MINUTES
        samples = [
            QueueStats(queue, minute, *counts)
            for (queue, minute), counts in taken.items()
            if minute > oldest
        ]
        for start in range(0, len(samples), STATS_MAX_SAMPLES):
            batch = samples[start : start + STATS_MAX_SAMPLES]
            try:
                await self._driver.stats_add(batch, now=self._clock.now())
            except Exception as exc:
                log.debug("could not write throughput counts, keeping them: %s", exc)
                self._keep(samples[start:])
                return

    def _keep(self, samples: list[QueueStats]) -> None:
        for sample in samples:
            key = (sample.queue, sample.minute)
            counts = self._counts.setdefault(key, [0, 0, 0])
            counts[0] += sample.completed
            counts[1] += sample.retried
            counts[2] += sample.failed
