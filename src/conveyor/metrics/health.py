"""Liveness and readiness of a worker, as Kubernetes probes ask for them.

The HTTP server answers from its own thread, so a probe is answered even while the worker's
event loop is stuck, and says so:

* **live** (``/healthz``): the event loop answers. A probe posts a ping to the loop
  (``call_soon_threadsafe``) unless one is still pending, and waits a moment for the answer; the
  loop is reported stuck once a ping has gone unanswered for ``stall_seconds``. So the check
  costs nothing between probes, tolerates a loop that is merely busy, and catches one blocked by
  a handler that never yields (a sync call in an ``async def``), or deadlocked. The backend is
  deliberately not part of liveness: restarting every worker because the backend is down would
  not bring it back, and would turn an outage into a restart storm.
* **ready** (``/readyz``): live, and the worker is running and not stopping, the backend
  answers (no backend call has succeeded since calls began failing ``backend_grace`` seconds
  ago; every backend call reports to an :meth:`~conveyor.engine.Engine.subscribe` subscriber,
  and an idle worker still calls the backend every poll interval), and leases are renewed (held
  leases have not failed to renew for more than a third of the lease, when another worker could
  soon take the jobs over).

State is written by the worker's loop (and, for backend calls, by whichever thread made them)
and read by the server's threads: single attribute writes and reads, no lock needed for
values that are only ever replaced whole.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from conveyor._errors import BackendUnavailable
from conveyor.engine import OperationEvent

STALL_SECONDS: Final = 10.0
BACKEND_GRACE: Final = 2.0
# A probe waits this long for the loop's answer before judging by the pending ping's age.
PING_WAIT: Final = 0.25


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    checks: dict[str, Check] = field(default_factory=dict[str, Check])

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "failing",
            "failing": [name for name, c in self.checks.items() if not c.ok],
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
        }


class HealthMonitor:
    def __init__(
        self,
        *,
        stall_seconds: float = STALL_SECONDS,
        backend_grace: float = BACKEND_GRACE,
    ) -> None:
        self.stall_seconds = stall_seconds
        self.backend_grace = backend_grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._finished = False
        self._lease_seconds = 30.0
        self._renew_interval = 10.0
        # The event loop ping: (sent at, answered) while one is pending.
        self._ping_lock = threading.Lock()
        self._pending: tuple[float, threading.Event] | None = None
        self.lag: float | None = None  # how late the last answered ping was
        # Backend calls.
        self._backend_failing_since: float | None = None
        self._backend_error = ""
        # Lease renewals: when they started failing (None: the last one worked), and when the
        # last report came (reports come only while the worker holds leases).
        self._renewal_failing_since: float | None = None
        self._renewal_reported_at = 0.0

    # -- written by the worker ---------------------------------------------------------------

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        stopping: asyncio.Event,
        *,
        lease_seconds: float,
        renew_interval: float,
    ) -> None:
        """The worker runs on ``loop`` now, until ``stopping`` is set."""
        self._lease_seconds = lease_seconds
        self._renew_interval = renew_interval
        self._stopping = stopping
        self._finished = False
        with self._ping_lock:
            self._pending = None
        self._loop = loop

    def detach(self) -> None:
        """The worker's run is over."""
        self._finished = True

    def operation(self, event: OperationEvent) -> None:
        error = event.error
        if error is None:
            self._backend_failing_since = None
        elif isinstance(error, BackendUnavailable):
            if self._backend_failing_since is None:
                self._backend_failing_since = time.monotonic()
            self._backend_error = f"{event.operation}: {error}"
        elif isinstance(error, Exception):  # the backend answered, if only to refuse
            self._backend_failing_since = None

    def lease_renewal(self, ok: bool) -> None:
        now = time.monotonic()
        self._renewal_reported_at = now
        if ok:
            self._renewal_failing_since = None
        elif self._renewal_failing_since is None:
            self._renewal_failing_since = now

    # -- read by the probes ------------------------------------------------------------------

    def ping(self, wait: float = PING_WAIT) -> Check:
        loop = self._loop
        if loop is None:
            return Check(True, "the worker has not started yet")
        with self._ping_lock:
            if self._pending is None:
                answered = threading.Event()
                sent = time.monotonic()
                try:
                    loop.call_soon_threadsafe(self._answer, sent, answered)
                except RuntimeError:
                    return Check(False, "the worker's event loop is closed")
                self._pending = (sent, answered)
            sent, answered = self._pending
        if answered.wait(wait):
            lag = self.lag or 0.0
            return Check(True, f"the event loop answered in {lag * 1000:.1f} ms")
        age = time.monotonic() - sent
        if loop.is_closed():
            return Check(False, "the worker's event loop is closed")
        if age > self.stall_seconds:
            return Check(False, f"the event loop has not answered for {age:.1f}s")
        return Check(True, f"the event loop is busy: no answer yet after {age:.1f}s")

    def _answer(self, sent: float, answered: threading.Event) -> None:
        self.lag = time.monotonic() - sent
        with self._ping_lock:
            self._pending = None
        answered.set()

    def pending_for(self) -> float:
        """Seconds the current ping has waited for the loop (0 when none is pending)."""
        pending = self._pending
        return 0.0 if pending is None else time.monotonic() - pending[0]

    def liveness(self) -> Report:
        loop = self.ping()
        return Report(loop.ok, {"event_loop": loop})

    def readiness(self) -> Report:
        checks = {
            "event_loop": self.ping(),
            "worker": self._worker(),
            "backend": self._backend(),
            "leases": self._leases(),
        }
        return Report(all(c.ok for c in checks.values()), checks)

    def running(self) -> bool:
        """The worker runs and is not stopping."""
        return self._worker().ok

    def _worker(self) -> Check:
        if self._loop is None:
            return Check(False, "the worker has not started yet")
        # The loop beside the worker ends when it is asked to stop, before it has finished
        # its jobs: from here, stopping and stopped look alike.
        if self._finished or (self._stopping is not None and self._stopping.is_set()):
            return Check(False, "the worker is stopping or has stopped")
        return Check(True, "running")

    def _backend(self) -> Check:
        since = self._backend_failing_since
        if since is None:
            return Check(True, "the last backend call succeeded")
        failing = time.monotonic() - since
        if failing < self.backend_grace:
            return Check(
                True, f"backend calls have failed for {failing:.1f}s: {self._backend_error}"
            )
        return Check(False, f"backend calls have failed for {failing:.1f}s: {self._backend_error}")

    def _leases(self) -> Check:
        since = self._renewal_failing_since
        now = time.monotonic()
        # Failed renewals are retried within a second; no report for longer than an interval
        # means the worker holds no leases any more, so nothing is at risk.
        if since is None or now - self._renewal_reported_at > self._renew_interval + 5.0:
            return Check(True, "held leases are renewed")
        failing = now - since
        limit = self._lease_seconds / 3
        if failing <= limit:
            return Check(True, f"lease renewals have failed for {failing:.1f}s")
        return Check(
            False,
            f"lease renewals have failed for {failing:.1f}s (over {limit:g}s, a third of "
            "the lease)",
        )
