"""The sliding log behind rate limits, shared by every backend.

"At most ``count`` starts in any window of ``per`` seconds" rules out a fixed window and a plain
token bucket, which both let ``2 * count`` jobs start across a window's boundary. Each
rate-limited queue keeps a *sliding log*: the start times of its last ``count`` starts, oldest
first. A fetch may start ``k`` jobs at ``now`` only where the ``k`` oldest of those are at least
``per`` old (:func:`allowance`), and appends the new starts in the same atomic step
(:func:`logged`). The log holds at most ``count`` entries, so :data:`MAX_RATE_COUNT` bounds both
the work of a fetch and what a queue stores.

A handler that meets an upstream limit blocks its queue until a time (``blocked_until``): no job
of it starts before then. These functions are the reference: the memory, SQLite and PostgreSQL
drivers call them, the Redis script does the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

# The most starts one limit may allow per window: each rate-limited queue keeps this many start
# times at most, and a fetch reads at most as many of them as it leases jobs.
MAX_RATE_COUNT: Final = 10_000
# The longest window of a limit, and the longest a handler's ``RateLimited`` may block a queue.
MAX_RATE_SECONDS: Final = 24 * 3600.0


def allowance(starts: Sequence[float], count: int, per: float, now: float) -> int:
    """How many jobs may start at ``now`` given the logged ``starts`` (oldest first): the free
    places of the log, plus its oldest entries that are at least ``per`` old.

    Only a prefix of the log is counted, so an entry out of order (a clock that stepped back)
    can only make the answer smaller, never let too many start."""
    recent = starts[-count:] if count else ()
    free = count - len(recent)
    for at in recent:
        if at + per > now:
            break
        free += 1
    return free


def logged(starts: Sequence[float], count: int, started: int, now: float) -> list[float]:
    """The log after ``started`` jobs started at ``now``: stamped no earlier than the newest
    entry (so the log stays in order whatever the clocks do), and cut to the last ``count``."""
    at = max(now, starts[-1]) if starts else now
    return [*starts, *([at] * started)][-count:]


def wait_seconds(
    starts: Sequence[float], count: int, per: float, blocked_until: float | None, now: float
) -> float | None:
    """How long until the limit lets a job start, or None if one may start at ``now``."""
    blocked = blocked_until is not None and blocked_until > now
    if not blocked and allowance(starts, count, per, now) > 0:
        return None
    recent = starts[-count:]
    free_at = recent[0] + per if len(recent) >= count else now
    return max(free_at, blocked_until or now) - now


def allowed(
    starts: Sequence[float], count: int, per: float, blocked_until: float | None, now: float
) -> int:
    """How many jobs may start at ``now``: none while the queue is blocked, else
    :func:`allowance`."""
    if blocked_until is not None and blocked_until > now:
        return 0
    return allowance(starts, count, per, now)
