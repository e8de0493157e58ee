"""Throttles and batches the progress handlers report into one ``job_progress_many`` call.

A handler's ``ctx.progress(...)`` only records the value here (from any thread: sync handlers
run in threads of their own) and returns at once; only the latest value of each job is kept.
Every ``interval`` seconds, the values reported since are written in one fenced call for all
jobs. Before a job's finish is written, the completer asks for that job's pending value first
(:meth:`ProgressBatcher.flush_jobs`), so the last progress a job reported is stored before it
leaves ``active`` (after which its token no longer admits a write).

Progress is informative: a write that fails is logged and dropped (a newer value replaces it
anyway), never retried for long and never a reason to fail the job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.clock import Clock
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import ProgressUpdate

log = logging.getLogger("conveyor.worker")

DEFAULT_INTERVAL = 0.5  # seconds between two writes of progress
MAX_PENDING = 10_000  # jobs with a value waiting to be written (only running jobs report)


class ProgressBatcher:
    def __init__(
        self,
        driver: Driver,
        *,
        clock: Clock,
        interval: float = DEFAULT_INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._driver = driver
        self._clock = clock
        self._interval = interval
        self._max_pending = max_pending
        self._pending: dict[str, ProgressUpdate] = {}
        self._pending_lock = threading.Lock()  # report() is called from handler threads too
        # One write at a time: a job's final flush waits for a periodic write holding an older
        # value of the same job, so the older value can never land after the final one.
        self._writing: asyncio.Lock | None = None
        self._dropped = False

    def report(
        self, job_id: str, token: str, queue: str | None, fraction: float, message: str | None
    ) -> None:
        """Record the latest progress of a running job; never blocks on I/O, never raises."""
        update = ProgressUpdate(job_id, token, fraction, message, queue)
        with self._pending_lock:
            if job_id not in self._pending and len(self._pending) >= self._max_pending:
                if not self._dropped:
                    self._dropped = True
                    log.warning("too much progress waiting to be written; dropping some")
                return
            self._pending[job_id] = update

    @property
    def pending(self) -> int:
        with self._pending_lock:
            return len(self._pending)

    def _take(self, job_ids: Iterable[str] | None) -> list[ProgressUpdate]:
        with self._pending_lock:
            if job_ids is None:
                taken = list(self._pending.values())
                self._pending.clear()
            else:
                taken = [u for i in job_ids if (u := self._pending.pop(i, None)) is not None]
            if not self._pending:
                self._dropped = False
            return taken

    async def flush_jobs(self, job_ids: Iterable[str]) -> None:
        """Write the pending progress of these jobs now (no round trip when there is none)."""
        await self._flush(list(job_ids))

    async def flush(self) -> None:
        """Write every pending value now."""
        await self._flush(None)

    async def _flush(self, job_ids: list[str] | None) -> None:
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:
            updates = self._take(job_ids)
            if not updates:
                return
            try:
                await self._driver.job_progress_many(updates, now=self._clock.now())
            except Exception as exc:
                log.warning(
                    "writing the progress of %d job(s) failed (dropped): %s", len(updates), exc
                )

    async def run(self) -> None:
        """Write what was reported every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            stop_if_cancelled()
            await self.flush()
