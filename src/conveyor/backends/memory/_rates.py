"""Rate limits in the memory model: each limited queue's sliding log of start times and the
time it is blocked until (see :mod:`conveyor.drivers.rates`), read and written under the store's
lock by the fetch that leases the jobs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from conveyor.drivers.rates import allowed, logged, wait_seconds
from conveyor.drivers.records import JobRecord, RateLimit


class RateLogs:
    """The start logs and blocks of every rate-limited queue of one store."""

    def __init__(self) -> None:
        self.starts: dict[str, list[float]] = {}  # queue -> start times, oldest first
        self.blocked_until: dict[str, float] = {}

    def caps(self, limits: Sequence[RateLimit], now: float) -> dict[str, int]:
        """How many jobs each limited queue may start at ``now``."""
        return {
            limit.queue: allowed(
                self.starts.get(limit.queue, ()),
                limit.count,
                limit.per,
                self.blocked_until.get(limit.queue),
                now,
            )
            for limit in limits
        }

    def record(self, limits: Sequence[RateLimit], leased: Iterable[JobRecord], now: float) -> None:
        """Log the starts of ``leased`` in their queues' logs."""
        started: dict[str, int] = {}
        for job in leased:
            started[job.queue] = started.get(job.queue, 0) + 1
        for limit in limits:
            if started.get(limit.queue):
                self.starts[limit.queue] = logged(
                    self.starts.get(limit.queue, ()), limit.count, started[limit.queue], now
                )

    def block(self, queue: str, until: float) -> None:
        self.blocked_until[queue] = max(until, self.blocked_until.get(queue, until))

    def waits(self, limits: Sequence[RateLimit], now: float) -> dict[str, float]:
        found: dict[str, float] = {}
        for limit in limits:
            wait = wait_seconds(
                self.starts.get(limit.queue, ()),
                limit.count,
                limit.per,
                self.blocked_until.get(limit.queue),
                now,
            )
            if wait is not None:
                found[limit.queue] = wait
        return found
