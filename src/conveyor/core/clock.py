"""Clocks. Production passes ``None`` as ``now`` so the backend uses its own clock; tests use
:class:`FakeClock` to move time forward without sleeping."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float | None:
        """Epoch seconds to pass to the backend, or ``None`` for the backend's own clock."""
        ...


class BackendClock:
    """Let the backend decide the time (Redis ``TIME``, PostgreSQL ``now()``, SQLite host clock)."""

    def now(self) -> float | None:
        return None


class FakeClock:
    """A manually advanced clock, safe to read from the lease keeper's thread."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, value: float) -> None:
        with self._lock:
            self._now = value
