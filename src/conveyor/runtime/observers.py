"""Observers: what metrics, tracing and hooks learn from a running worker.

The runtime calls every registered :class:`Observer` at a few points of a job's life. Calls
happen on the worker's event loop and must return at once; an observer that raises is logged
(once per observer and method) and otherwise ignored, so watching a worker can never change
what it does to a job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conveyor.drivers.records import JobRecord, TransitionKind

log = logging.getLogger("conveyor.worker")


class Observer:
    """Subclass and override what you need; every method does nothing by default."""

    def job_started(self, record: JobRecord, now: float) -> None:
        """``record``'s attempt is starting; ``now`` on the worker's clock (the backend's,
        in production), so ``now - record.run_at`` is how long the job waited to start."""

    def job_finished(self, record: JobRecord, kind: TransitionKind | None, duration: float) -> None:
        """The transition ending ``record``'s attempt was written (``kind``), or refused
        because the worker no longer held the job (``None``: its lease was lost).
        ``duration``: seconds the handler ran (0 for a job handed back unrun)."""

    def lease_renewal(self, ok: bool, count: int) -> None:
        """A renewal of ``count`` held leases reached the backend (``ok``) or failed."""


class Observers(Observer):
    """Several observers behind one; each call reaches all of them, whatever one does."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self.observers: list[Observer] = list(observers)
        self._complained: set[tuple[int, str]] = set()

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def __bool__(self) -> bool:
        return bool(self.observers)

    def _failed(self, observer: Observer, method: str, exc: Exception) -> None:
        key = (id(observer), method)
        if key in self._complained:
            return
        self._complained.add(key)
        log.error(
            "observer %s failed in %s (further failures of it there are not logged): %r",
            type(observer).__name__,
            method,
            exc,
            exc_info=exc,
        )

    def job_started(self, record: JobRecord, now: float) -> None:
        for observer in self.observers:
            try:
                observer.job_started(record, now)
            except Exception as exc:
                self._failed(observer, "job_started", exc)

    def job_finished(self, record: JobRecord, kind: TransitionKind | None, duration: float) -> None:
        for observer in self.observers:
            try:
                observer.job_finished(record, kind, duration)
            except Exception as exc:
                self._failed(observer, "job_finished", exc)

    def lease_renewal(self, ok: bool, count: int) -> None:
        for observer in self.observers:
            try:
                observer.lease_renewal(ok, count)
            except Exception as exc:
                self._failed(observer, "lease_renewal", exc)
