"""``WorkerConfig``: how a worker runs, as one frozen, validated value."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from conveyor.core.clock import BackendClock, Clock
from conveyor.drivers.records import Retention

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker runs. Defaults follow common practice; the CLI maps its flags onto these."""

    concurrency: int = 5
    queues: tuple[str, ...] = ()  # empty: every queue the worker's definitions use
    lease_seconds: float = 30.0
    lease_renew_interval: float | None = None  # default: a third of the lease
    shutdown_grace: float = 25.0
    max_stalls: int = 2
    retention: Retention = field(default_factory=Retention)
    poll_interval: float = 1.0  # longest idle wait before fetching again
    maintenance_interval: float = 5.0
    heartbeat_interval: float = 10.0
    burst: bool = False  # exit once the served queues have nothing runnable or running
    clock: Clock = field(default_factory=BackendClock)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_stalls < 0:
            raise ValueError(f"max_stalls must be >= 0, got {self.max_stalls}")
        for name in (
            "lease_seconds",
            "poll_interval",
            "maintenance_interval",
            "heartbeat_interval",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
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
