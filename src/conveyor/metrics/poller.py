"""Queue depth and live workers, read from the backend by one worker of a deployment.

Counting jobs by state is a real query (a scan of an index on SQL, a command per queue and
state on Redis): if every worker ran it every scrape, N workers would multiply the load by N
and Prometheus' ``sum()`` would count each job N times. So the workers elect one of them with
a leadership of its own (``leader_acquire("metrics", worker id, ttl)``, the mechanism the
maintenance loop uses), and only that one reads :meth:`~conveyor.Queue.queues` and the live
workers every ``interval`` seconds and exports them. The others export nothing for these
families; ``conveyor_metrics_leader`` says which worker is the one.

The leadership lasts two intervals and every worker tries to take it every interval, so when
the leader dies another exports within three intervals; a leader that stops releases it, and
another takes over at its next tick. A leader that cannot read the backend, or loses its term,
stops exporting at once: a gap in the graph is honest, a stale depth is not.

The backend's whole set of queues is exported (the leadership is per backend, so the leader
speaks for queues other workers serve too), up to :data:`MAX_QUEUES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from conveyor.core.clock import Clock
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobState, QueueInfo, WorkerInfo
from conveyor.metrics.families import Families

log = logging.getLogger("conveyor.metrics")

LEADERSHIP: Final = "metrics"
INTERVAL: Final = 15.0
MAX_QUEUES: Final = 1000  # a bound on the series one scrape can hold


@dataclass(frozen=True, slots=True)
class Snapshot:
    depth: dict[tuple[str, str], int] = field(default_factory=dict[tuple[str, str], int])
    paused: dict[str, int] = field(default_factory=dict[str, int])
    workers: dict[str, int] = field(default_factory=dict[str, int])
    slots: dict[str, int] = field(default_factory=dict[str, int])


def snapshot(queues: Sequence[QueueInfo], workers: Iterable[WorkerInfo]) -> Snapshot:
    """The gauges' values: every state of every queue (zeros included, so a drained queue
    reads 0 rather than vanishing), and the live workers and their slots per queue served."""
    snap = Snapshot()
    for info in sorted(queues, key=lambda q: q.name)[:MAX_QUEUES]:
        snap.paused[info.name] = int(info.paused)
        for state in JobState:
            snap.depth[(info.name, state.value)] = info.counts.get(state, 0)
    for worker in workers:
        for queue in worker.queues:
            if queue in snap.workers or len(snap.workers) < MAX_QUEUES:
                snap.workers[queue] = snap.workers.get(queue, 0) + 1
                snap.slots[queue] = snap.slots.get(queue, 0) + worker.concurrency
    return snap


class LeaderCollector:
    """Exports the leader's latest :class:`Snapshot` (nothing when not the leader). The
    snapshot is replaced whole, so a scrape never sees half of an update."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.snapshot: Snapshot | None = None
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return self._families(Snapshot())

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        return self._families(snap or Snapshot())

    @staticmethod
    def _families(snap: Snapshot) -> list[Metric]:
        depth = GaugeMetricFamily(
            "conveyor_queue_depth",
            "Jobs stored in each queue by state (exported by the metrics leader only).",
            labels=["queue", "state"],
        )
        for (queue, state), count in snap.depth.items():
            depth.add_metric([queue, state], count)
        paused = GaugeMetricFamily(
            "conveyor_queue_paused",
            "1 if the queue is paused (exported by the metrics leader only).",
            labels=["queue"],
        )
        for queue, value in snap.paused.items():
            paused.add_metric([queue], value)
        workers = GaugeMetricFamily(
            "conveyor_workers",
            "Live workers serving each queue (exported by the metrics leader only).",
            labels=["queue"],
        )
        for queue, count in snap.workers.items():
            workers.add_metric([queue], count)
        slots = GaugeMetricFamily(
            "conveyor_worker_slots",
            "Jobs the live workers of each queue can run at once, summed (exported by the "
            "metrics leader only).",
            labels=["queue"],
        )
        for queue, count in snap.slots.items():
            slots.add_metric([queue], count)
        return [depth, paused, workers, slots]


class DepthPoller:
    def __init__(
        self,
        driver: Driver,
        *,
        worker_id: str,
        clock: Clock,
        families: Families,
        collector: LeaderCollector,
        interval: float = INTERVAL,
    ) -> None:
        self._driver = driver
        self._worker_id = worker_id
        self.clock = clock
        self._families = families
        self._collector = collector
        self.interval = interval
        self.is_leader = False
        self.closed = False  # set when the metrics are closed: the loop ends at its next tick
        self._warned = False

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set() and not self.closed:
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await stopping.wait()
        finally:
            await self.release()

    async def tick(self) -> None:
        try:
            self.is_leader = await self._driver.leader_acquire(
                LEADERSHIP, self._worker_id, ttl=self.interval * 2, now=self.clock.now()
            )
            if self.is_leader:
                started = time.monotonic()
                queues = await self._driver.queue_list()
                workers = await self._driver.worker_list(now=self.clock.now())
                self._collector.snapshot = snapshot(queues, workers)
                log.debug("queue depth read in %.1f ms", (time.monotonic() - started) * 1000)
            else:
                self._collector.snapshot = None
        except Exception as exc:  # tried again next interval; nothing stale is exported meanwhile
            self._collector.snapshot = None
            if not self._warned:
                log.warning("could not read the queue depth for metrics: %s", exc)
                self._warned = True
        else:
            self._warned = False
        self._families.leader.set(1 if self._collector.snapshot is not None else 0)

    async def release(self) -> None:
        self._collector.snapshot = None
        self._families.leader.set(0)
        if not self.is_leader:
            return
        self.is_leader = False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._driver.leader_release(LEADERSHIP, self._worker_id)
