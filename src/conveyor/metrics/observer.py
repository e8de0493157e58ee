"""The observer that turns a worker's job events into metrics.

It runs on the worker's event loop for every job, so it does as little as it can: the labelled
children of each family are looked up once per (queue, job, outcome) and kept, so an event costs
a dictionary lookup and an increment (prometheus_client's ``labels()`` takes a lock and builds a
tuple each call).

Label values stay bounded whatever the backend holds: a job name the worker has no handler for
(a new kind enqueued during a rolling deploy, a misspelt name) is counted as ``other``, and so
is a queue the worker does not serve, so no producer can grow the worker's series without
limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import Counter, Histogram
from prometheus_client.metrics import Gauge

from conveyor.drivers.records import JobRecord, TransitionKind
from conveyor.engine import OperationEvent
from conveyor.metrics.families import OTHER, OUTCOMES, Families
from conveyor.metrics.health import HealthMonitor
from conveyor.runtime.observers import Observer

# Attempts tracked between their start and their end (to time them and count them running).
# Each started attempt ends exactly once, so this holds at most the worker's concurrency plus a
# few attempts unwinding; the bound only guards against a runtime bug leaking entries.
MAX_TRACKED: Final = 100_000


class JobMetrics(Observer):
    """Counts, times and gauges jobs for one worker, and feeds its lease reports to health."""

    def __init__(
        self,
        families: Families,
        health: HealthMonitor,
        labels: Callable[[], tuple[Iterable[str], Iterable[str]]],
    ) -> None:
        """``labels`` returns (queues, job names) the worker serves; called once, at the first
        event, since handlers may be registered after the worker was instrumented."""
        self._families = families
        self._health = health
        self._labels = labels
        self._queues: frozenset[str] | None = None
        self._names: frozenset[str] = frozenset()
        self._finished: dict[tuple[str, str, str], Counter] = {}
        self._timers: dict[tuple[str, str], tuple[Histogram, Histogram]] = {}
        self._running: dict[str, Gauge] = {}
        # (job id, lease token) of a started attempt -> its (queue, job) labels.
        self._started: dict[tuple[str, str | None], tuple[str, str]] = {}

    def _label(self, record: JobRecord) -> tuple[str, str]:
        queues = self._queues
        if queues is None:
            served, names = self._labels()
            queues = self._queues = frozenset(served)
            self._names = frozenset(names)
        queue = record.queue if record.queue in queues else OTHER
        return queue, record.name if record.name in self._names else OTHER

    def job_started(self, record: JobRecord, now: float) -> None:
        key = self._label(record)
        timers = self._timers.get(key)
        if timers is None:
            timers = self._timers[key] = (
                self._families.duration.labels(*key),
                self._families.wait.labels(*key),
            )
        timers[1].observe(max(now - record.run_at, 0.0))
        running = self._running.get(key[0])
        if running is None:
            running = self._running[key[0]] = self._families.running.labels(key[0])
        running.inc()
        if len(self._started) < MAX_TRACKED:
            self._started[(record.id, record.lease_token)] = key

    def job_finished(self, record: JobRecord, kind: TransitionKind | None, duration: float) -> None:
        started = self._started.pop((record.id, record.lease_token), None)
        key = started or self._label(record)
        outcome = OUTCOMES.get(kind, OTHER)
        counter = self._finished.get((*key, outcome))
        if counter is None:
            counter = self._finished[(*key, outcome)] = self._families.jobs.labels(*key, outcome)
        counter.inc()
        if started is None:
            return  # handed back unrun, or could not be started: nothing ran, nothing to time
        self._running[key[0]].dec()
        self._timers[key][0].observe(duration)

    def lease_renewal(self, ok: bool, count: int) -> None:
        self._families.renewals.inc()
        if not ok:
            self._families.renewals_failed.inc()
        self._health.lease_renewal(ok)

    def on_operation(self, event: OperationEvent) -> None:
        """An :class:`~conveyor.engine.Engine` subscriber: called after every backend call,
        on the thread that made it."""
        self._health.operation(event)
        if event.error is not None:
            outcome = event.outcome
            if outcome != "cancelled":
                self._families.backend_errors.labels(event.operation, outcome).inc()
