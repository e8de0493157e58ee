"""The overview's numbers, read in the background.

Counting jobs by state costs a scan on a SQL backend (a million jobs: a large fraction of a
second on PostgreSQL), so no request ever counts: one task per app reads ``Queue.queues()``,
the live workers and the last hour's per-minute throughput every few seconds, and requests show
its latest snapshot. A mounted sub-app gets no lifespan events, so the task starts with the
first request, in the server's event loop, and is started again if it ever ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from conveyor._queue import Queue
from conveyor.drivers.records import QueueInfo, QueueStats, WorkerInfo

log = logging.getLogger("conveyor.dashboard")

HOUR_MINUTES = 60
FIRST_READ_WAIT = 5.0  # how long a first request waits for the first snapshot


@dataclass(frozen=True)
class Snapshot:
    """What the task read last, when, and the error of its latest attempt if it failed."""

    queues: tuple[QueueInfo, ...] = ()
    workers: tuple[WorkerInfo, ...] = ()
    stats: dict[str, tuple[QueueStats, ...]] = field(
        default_factory=dict[str, tuple[QueueStats, ...]]
    )
    read_at: float | None = None  # time.time() of the read
    took: float = 0.0  # seconds the read took
    error: str | None = None


class OverviewCache:
    def __init__(self, queue: Queue, *, interval: float = 3.0, timeout: float = 30.0) -> None:
        if not 0.5 <= interval <= 3600:
            raise ValueError(f"refresh interval must be 0.5-3600 seconds, got {interval!r}")
        self.queue = queue
        self.interval = interval
        self.timeout = timeout
        self.snapshot = Snapshot()
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None

    def start(self) -> None:
        """Start the refresh task in the running loop unless it runs already."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is _running_loop():
            return
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="conveyor-dashboard-overview"
        )

    async def current(self) -> Snapshot:
        """The latest snapshot; the first caller waits (bounded) for the first read."""
        self.start()
        if self.snapshot.read_at is None and self.snapshot.error is None and self._ready:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_READ_WAIT):
                    await self._ready.wait()
        return self.snapshot

    def refresh_soon(self) -> None:
        """Read again now (an action changed what the overview shows)."""
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failing = False
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout):
                    self.snapshot = await self._read()
                if failing:
                    log.info("dashboard overview: reading the queues works again")
                failing = False
            except Exception as exc:  # shown on the page; the next round tries again
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not failing:
                    log.warning(
                        "dashboard overview: reading the queues failed: %s",
                        message,
                        extra={"event": "dashboard_refresh", "error": message},
                    )
                failing = True
                old = self.snapshot
                self.snapshot = Snapshot(
                    old.queues, old.workers, old.stats, old.read_at, old.took, message
                )
            self.snapshot = _took(self.snapshot, time.monotonic() - started)
            assert self._ready is not None and self._wake is not None
            self._ready.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _read(self) -> Snapshot:
        queues = await self.queue.queues()
        workers = await self.queue.workers()
        per_queue: dict[str, list[QueueStats]] = {}
        for sample in await self.queue.stats(minutes=HOUR_MINUTES):
            per_queue.setdefault(sample.queue, []).append(sample)
        return Snapshot(
            tuple(queues),
            tuple(workers),
            {name: tuple(samples) for name, samples in per_queue.items()},
            time.time(),
        )


def _took(snapshot: Snapshot, seconds: float) -> Snapshot:
    return Snapshot(
        snapshot.queues,
        snapshot.workers,
        snapshot.stats,
        snapshot.read_at,
        seconds,
        snapshot.error,
    )


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()
