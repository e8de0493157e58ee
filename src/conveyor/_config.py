"""``WorkerConfig``: how a worker runs, as one frozen, validated value."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

from conveyor.core.clock import BackendClock, Clock
from conveyor.core.rescue import MAX_STALLS
from conveyor.drivers.records import Retention
from conveyor.runtime.gc_tuning import check_gc_threshold
from conveyor.runtime.prefetch import PrefetchSetting, check_prefetch

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker runs. Defaults follow common practice; the CLI maps its flags onto these."""

    concurrency: int = 5
    # Jobs leased beyond ``concurrency``, to start the moment a slot frees (see
    # runtime/prefetch.py): "auto" leases up to ``concurrency`` more on a backend where that
    # pays (Redis) while recent jobs are short (under 10 ms on average); an int sets the limit
    # on any backend, whatever the jobs take; 0 never.
    prefetch: PrefetchSetting = "auto"
    queues: tuple[str, ...] = ()  # empty: every queue the worker's definitions use
    lease_seconds: float = 30.0
    lease_renew_interval: float | None = None  # default: a third of the lease
    shutdown_grace: float = 25.0
    max_stalls: int = 2
    retention: Retention = field(default_factory=Retention)
    poll_interval: float = 1.0  # longest idle wait before fetching again
    # Rescue, promotion and retention cadence; default: a sixth of the lease, at most 5 s.
    maintenance_interval: float | None = None
    heartbeat_interval: float = 10.0
    # Where leases are renewed from: "process" (a small process beside the worker, so that a
    # handler holding the GIL cannot starve renewals; the default for stores shared between
    # processes, on the backend's clock), "thread", or "auto".
    lease_keeper: Literal["auto", "thread", "process"] = "auto"
    burst: bool = False  # exit once the served queues have nothing runnable or running
    clock: Clock = field(default_factory=BackendClock)
    # An OpenTelemetry span per attempt (see conveyor.tracing): None traces when the API is
    # installed and $OTEL_PYTHON_DISABLED_INSTRUMENTATIONS does not list conveyor.
    tracing: bool | None = None
    # The garbage collector's first-generation threshold while the worker runs, with what
    # exists at start frozen (see runtime/gc_tuning.py): None leaves the process's collector
    # as it is (the default for a worker embedded in an application); `conveyor worker` sets
    # WORKER_GC_THRESHOLD unless told --gc-threshold 0.
    gc_threshold: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        check_prefetch(self.prefetch)
        if not 0 <= self.max_stalls <= MAX_STALLS:
            raise ValueError(f"max_stalls must be from 0 to {MAX_STALLS}, got {self.max_stalls}")
        for name in (
            "lease_seconds",
            "poll_interval",
            "maintenance_interval",
            "heartbeat_interval",
        ):
            value: float | None = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        check_gc_threshold(self.gc_threshold)
        if self.tracing not in (None, True, False):
            raise ValueError(f"tracing must be True, False or None, got {self.tracing!r}")
        if self.lease_keeper not in ("auto", "thread", "process"):
            raise ValueError(
                f"lease_keeper must be 'auto', 'thread' or 'process', got {self.lease_keeper!r}"
            )
        if not (math.isfinite(self.shutdown_grace) and self.shutdown_grace >= 0):
            raise ValueError(f"shutdown_grace must be >= 0, got {self.shutdown_grace}")
        renew = self.lease_renew_interval
        if renew is not None and not (math.isfinite(renew) and renew > 0):
            raise ValueError(f"lease_renew_interval must be a finite number > 0, got {renew}")
        if renew is not None and renew >= self.lease_seconds:
            log.warning(
                "lease_renew_interval (%gs) is not shorter than lease_seconds (%gs): leases will "
                "lapse while jobs run and other workers may run them again",
                renew,
                self.lease_seconds,
            )

    @property
    def renew_interval(self) -> float:
        return self.lease_renew_interval or self.lease_seconds / 3

    @property
    def maintenance_every(self) -> float:
        """The maintenance interval in effect: a sixth of the lease by default (at most 5 s), so
        a dead leader is replaced well within one lease."""
        if self.maintenance_interval is not None:
            return self.maintenance_interval
        return min(5.0, self.lease_seconds / 6)
