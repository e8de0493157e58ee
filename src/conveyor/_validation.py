"""Checks of the numbers callers pass: delays, timeouts, priorities, attempts.

``job()``, the enqueue methods and the handler signals (``Retry``, ``Snooze``) share these, so a
value is accepted or refused the same way everywhere. Each check takes the exception class to
raise: a bad definition raises ``InvalidJobDefinition``, a bad call argument ``InvalidArgument``.
Every message names the value that was refused.
"""

from __future__ import annotations

import math
from datetime import timedelta

MAX_ATTEMPTS = 1000

# Priorities are bounded so every backend can order by them exactly and store them compactly
# (the Redis backend keeps them as sorted-set scores and in fixed-width members).
MIN_PRIORITY = -1_000_000
MAX_PRIORITY = 1_000_000

# Delays, timeouts and run times are bounded too: a century is beyond any real schedule, and
# backends keep run times in fixed-width fields (the Redis backend: microseconds in 16 digits).
MAX_SECONDS = 100 * 365 * 24 * 3600.0
MAX_EPOCH = 7_258_118_400.0  # 2200-01-01T00:00:00Z


def seconds(value: object, what: str, *, error: type[Exception], positive: bool = False) -> float:
    """``value`` (a number of seconds or a timedelta) as finite float seconds, >= 0 (or > 0)."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise error(f"{what} must be a number of seconds or a timedelta, got {value!r}")
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        bound = "> 0" if positive else ">= 0"
        raise error(f"{what} must be {bound} and finite, got {value!r}")
    if result > MAX_SECONDS:
        raise error(f"{what} must be at most 100 years ({MAX_SECONDS:.0f} s), got {value!r}")
    return result


def priority(value: object, what: str = "priority", *, error: type[Exception]) -> int:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not MIN_PRIORITY <= value <= MAX_PRIORITY
    ):
        raise error(
            f"{what} must be an integer from {MIN_PRIORITY:_} to {MAX_PRIORITY:_} "
            f"(lower runs first), got {value!r}"
        )
    return value


def attempts(value: object, what: str = "attempts", *, error: type[Exception]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ATTEMPTS:
        raise error(f"{what} must be an integer from 1 to {MAX_ATTEMPTS}, got {value!r}")
    return value
