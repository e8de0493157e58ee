"""The observer that turns a worker's job events into metrics.

It runs on the worker's event loop for every job, so it does as little as it can. The job
families are plain counts in dictionaries and lists, written by that one thread, and turned
into Prometheus families only when scraped (:meth:`JobMetrics.collect`): an event costs a
dictionary lookup, a ``bisect`` and a few integer increments, about a microsecond. The
prometheus_client metric objects take a lock per update (a histogram observation costs
several microseconds), which at thousands of jobs a second was a few percent of the worker's
CPU. A scrape, on the server's thread, copies each list in one step (atomic under the GIL), so
a histogram is never read half-updated.

Label values stay bounded whatever the backend holds: a job name the worker has no handler for
(a new kind enqueued during a rolling deploy, a misspelt name) is counted as ``other``, and so
is a queue the worker does not serve, so no producer can grow the worker's series without
limit.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from conveyor.drivers.records import JobRecord, TransitionKind
from conveyor.engine import OperationEvent
from conveyor.metrics.families import OTHER, OUTCOMES, SECONDS_BUCKETS, Families
from conveyor.metrics.health import HealthMonitor
from conveyor.runtime.observers import Observer

# Attempts tracked between their start and their end (to time them and count them running).
# Each started attempt ends exactly once, so this holds at most the worker's concurrency plus a
# few attempts unwinding; the bound only guards against a runtime bug leaking entries.
MAX_TRACKED: Final = 100_000

_LE: Final = [str(float(b)) for b in SECONDS_BUCKETS] + ["+Inf"]  # as prometheus_client writes


class _Histogram:
    """Observations per bucket (not cumulative: one increment each) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(SECONDS_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le: "less or equal").
        self.counts[bisect.bisect_left(SECONDS_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        counts, total = list(self.counts), self.total
        running = 0
        buckets: list[tuple[str, float]] = []
        for le, count in zip(_LE, counts, strict=True):
            running += count
            buckets.append((le, float(running)))
        return buckets, total


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
        self._finished: dict[tuple[str, str, str], int] = {}
        self._durations: dict[tuple[str, str], _Histogram] = {}
        self._waits: dict[tuple[str, str], _Histogram] = {}
        self._running: dict[str, int] = {}
        # (job id, lease token) of a started attempt -> its (queue, job) labels.
        self._started: dict[tuple[str, str | None], tuple[str, str]] = {}

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def _label(self, record: JobRecord) -> tuple[str, str]:
        queues = self._queues
        if queues is None:
            served, names = self._labels()
            queues = self._queues = frozenset(served)
            self._names = frozenset(names)
        queue = record.queue if record.queue in queues else OTHER
        return queue, record.name if record.name in self._names else OTHER

    # -- the runtime's calls, on the worker's loop -------------------------------------------

    def job_started(self, record: JobRecord, now: float) -> None:
        key = self._label(record)
        waits = self._waits.get(key)
        if waits is None:
            waits = self._waits[key] = _Histogram()
            self._durations[key] = _Histogram()
        waits.observe(max(now - record.run_at, 0.0))
        self._running[key[0]] = self._running.get(key[0], 0) + 1
        if len(self._started) < MAX_TRACKED:
            self._started[(record.id, record.lease_token)] = key

    def job_finished(self, record: JobRecord, kind: TransitionKind | None, duration: float) -> None:
        started = self._started.pop((record.id, record.lease_token), None)
        key = started or self._label(record)
        counted = (key[0], key[1], OUTCOMES.get(kind, OTHER))
        self._finished[counted] = self._finished.get(counted, 0) + 1
        if started is None:
            return  # handed back unrun, or could not be started: nothing ran, nothing to time
        self._running[key[0]] -= 1
        self._durations[key].observe(duration)

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

    # -- the scrape, on the server's thread --------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return self._families_of({}, {}, {}, {})

    def collect(self) -> Iterable[Metric]:
        # dict(...) copies in one step under the GIL, so the loop may go on writing meanwhile.
        return self._families_of(
            dict(self._finished), dict(self._durations), dict(self._waits), dict(self._running)
        )

    @staticmethod
    def _families_of(
        finished: dict[tuple[str, str, str], int],
        durations: dict[tuple[str, str], _Histogram],
        waits: dict[tuple[str, str], _Histogram],
        running: dict[str, int],
    ) -> list[Metric]:
        jobs = CounterMetricFamily(
            "conveyor_jobs",
            "Attempts that ended, by the transition written: completed, retried, failed (for "
            "good), cancelled, snoozed, requeued (handed back), lease_lost (not written: "
            "another worker owns the job now).",
            labels=["queue", "job", "outcome"],
        )
        for labels, count in sorted(finished.items()):
            jobs.add_metric(list(labels), count)
        duration = HistogramMetricFamily(
            "conveyor_job_duration_seconds",
            "How long handlers ran, per attempt, whatever its outcome.",
            labels=["queue", "job"],
        )
        for pair, histogram in sorted(durations.items()):
            duration.add_metric(list(pair), *histogram.cumulative())
        wait = HistogramMetricFamily(
            "conveyor_job_wait_seconds",
            "How long jobs waited to start once due: from enqueue (or the scheduled or retry "
            "time) to the start of the attempt.",
            labels=["queue", "job"],
        )
        for pair, histogram in sorted(waits.items()):
            wait.add_metric(list(pair), *histogram.cumulative())
        gauge = GaugeMetricFamily(
            "conveyor_jobs_running", "Attempts running in this worker now.", labels=["queue"]
        )
        for queue, count in sorted(running.items()):
            gauge.add_metric([queue], count)
        return [jobs, duration, wait, gauge]
