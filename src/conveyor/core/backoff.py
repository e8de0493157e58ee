"""Backoff strategies: how long to wait before the next attempt.

Strategies are small frozen values so they can sit on a job definition and be compared in tests.
``delay(attempt, rng)`` takes the number of the attempt that just failed (1 for the first) and a
random source, so jitter is reproducible under a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol


class Backoff(Protocol):
    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ...


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same delay after every failure."""

    seconds: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"Fixed backoff seconds must be >= 0 and finite, got {self.seconds}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True, slots=True)
class Exponential:
    """``base * factor**(attempt-1)`` seconds, capped at ``cap``.

    With ``jitter=True`` (the default) the delay is drawn uniformly from ``[0, capped]`` ("full
    jitter"): retries of many jobs that failed together spread out instead of stampeding the
    dependency that failed them.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("base", "factor", "cap"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"Exponential backoff {name} must be finite, got {value}")
        if self.base < 0 or self.cap < 0:
            raise ValueError("Exponential backoff base and cap must be >= 0")
        if self.factor < 1:
            raise ValueError(f"Exponential backoff factor must be >= 1, got {self.factor}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        exponent = max(attempt - 1, 0)
        # A float power overflows (OverflowError) long after the cap is passed: treat it as the cap
        # (unless the base is 0: then every delay is 0, however large the attempt number).
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = self.cap if self.base > 0 else 0.0
        capped = min(raw, self.cap)
        return rng.uniform(0.0, capped) if self.jitter else capped


DEFAULT_BACKOFF: Backoff = Exponential()
