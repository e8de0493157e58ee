"""The metric families one instrumented worker exports, in a registry of its own.

Names follow the Prometheus conventions: a ``conveyor_`` prefix, base units (``_seconds``),
``_total`` on counters. Labels are bounded by construction: ``queue`` is one of the queues the
worker serves, ``job`` one of the names it has handlers for (any other name is ``other``),
``outcome`` one of :data:`OUTCOMES`, ``state`` a :class:`~conveyor.JobState`. No job ids, worker
ids or hostnames: those belong to Prometheus' own ``instance`` label, or to the logs.

A registry per worker, not prometheus_client's global one: several workers in one process (tests,
an application that runs two) must not collide, and stopping one must not leave its series
behind in another's scrape.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from conveyor.drivers.records import TransitionKind

# From a millisecond (a no-op handler, a job fetched the moment it was enqueued) to hours (a
# report that runs long, a backlog that waits long); Prometheus' defaults stop at 10 s.
SECONDS_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
)

# The written transition that ended an attempt, as the ``outcome`` label says it; ``None`` is
# an outcome the worker could not write because it no longer held the job.
OUTCOMES: Final[dict[TransitionKind | None, str]] = {
    TransitionKind.COMPLETE: "completed",
    TransitionKind.RETRY: "retried",
    TransitionKind.FAIL: "failed",
    TransitionKind.CANCEL: "cancelled",
    TransitionKind.SNOOZE: "snoozed",
    TransitionKind.REQUEUE: "requeued",
    None: "lease_lost",
}

OTHER: Final = "other"  # the label value of a job name or queue the worker does not serve


class Families:
    """The metric families a worker updates now and then; those of every job are counted by
    :mod:`conveyor.metrics.observer` (cheaper), the leader-only ones live in
    :mod:`conveyor.metrics.poller`."""

    def __init__(self, registry: CollectorRegistry, *, process: bool = True) -> None:
        if process:
            # The usual process_*, python_gc_* and python_info series, as the default registry
            # has them: memory, CPU, open files of the worker process.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.renewals = Counter(
            "conveyor_lease_renewals",
            "Rounds of lease renewal (each renews every lease the worker holds).",
            registry=registry,
        )
        self.renewals_failed = Counter(
            "conveyor_lease_renewals_failed",
            "Rounds of lease renewal that did not reach the backend.",
            registry=registry,
        )
        self.backend_errors = Counter(
            "conveyor_backend_errors",
            "Backend operations that failed: outcome unavailable (connection, timeout) or "
            "error (the backend refused the operation).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.up = Gauge(
            "conveyor_worker_up",
            "1 while the worker runs and is not stopping.",
            registry=registry,
        )
        self.info = Gauge(
            "conveyor_worker_info",
            "Always 1; the labels describe the worker: Conveyor's version and served queues.",
            ["version", "queues"],
            registry=registry,
        )
        self.concurrency = Gauge(
            "conveyor_worker_concurrency",
            "Jobs the worker runs at once at most.",
            registry=registry,
        )
        self.loop_lag = Gauge(
            "conveyor_event_loop_lag_seconds",
            "How late the worker's event loop answered the latest health ping (measured when "
            "/metrics or /healthz is requested).",
            registry=registry,
        )
        self.leader = Gauge(
            "conveyor_metrics_leader",
            "1 on the one worker of a backend that exports the queue depth and worker gauges.",
            registry=registry,
        )
