"""Groups: per-key concurrency, per-key rate limits and fair serving, shared by every backend.

A job may join a group (``NewJob.group``): a key scoped to its queue, with the group's limits.
The engine builds the key from the job's name and what the definition's ``group_key`` function
returns for its payload, so two definitions never share a group by accident.

What a backend keeps per group (the *group record*): its limits (those of the job placed in it
last), how many of its jobs are queued and active, when a handler's ``RateLimited`` blocks it
until, the sliding log of its recent starts (as for queue rate limits, see
:mod:`conveyor.drivers.rates`), and its *turn*: the instant it was last served, or the instant
its rate window frees or its block ends, whichever is later. A group is *eligible* when it has
queued jobs, fewer active jobs than its concurrency, and its turn has come (``turn <= now``).

A fetch serves eligible groups in turn order (least recently served first), one job per group
per round, each group's own jobs in run order (priority, run time, seq), so a group that holds
100,000 queued jobs gets one start per round like a group that holds one. A group's queued jobs
live apart from the queue's plain jobs: a full or rate-held group is skipped without reading
its jobs, and a fetch reads a number of groups and jobs bounded by its ``limit``.

Grouped and plain jobs share a fetch's ``limit`` so neither starves the other
(:func:`split_limit`). These functions are the reference the memory driver runs; the SQL
drivers and the Redis scripts do the same arithmetic.
"""

from __future__ import annotations

import math
from typing import Final, cast

from conveyor._errors import InvalidArgument
from conveyor.drivers.rates import MAX_RATE_SECONDS
from conveyor.drivers.records import JobGroup

# A group key's longest text (the engine's key: job name, ':' and the user's key).
GROUP_KEY_CHARS: Final = 512
# The most jobs of one group active at once that a limit may allow.
MAX_GROUP_CONCURRENCY: Final = 10_000
# The most starts per window a group's rate may allow: each group keeps this many start times
# at most, so a fetch's work per group it serves stays small.
MAX_GROUP_RATE_COUNT: Final = 1_000


def check_group(job_id: str, group: object) -> None:
    """Refuse a group a backend could not keep exactly, naming the job."""
    if not isinstance(group, JobGroup):
        raise InvalidArgument(f"job {job_id!r}: group must be a JobGroup, got {group!r}")
    key = cast(object, group.key)
    if not isinstance(key, str) or not 1 <= len(key) <= GROUP_KEY_CHARS:
        raise InvalidArgument(
            f"job {job_id!r}: group key must be text of 1 to {GROUP_KEY_CHARS} characters, "
            f"got {key!r}"
        )
    if "\x00" in key:
        raise InvalidArgument(f"job {job_id!r}: group key holds a NUL character")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"job {job_id!r}: group key is not valid text") from None
    _whole(job_id, "group concurrency", group.concurrency, MAX_GROUP_CONCURRENCY)
    _whole(job_id, "group rate count", group.rate_count, MAX_GROUP_RATE_COUNT)
    per = cast(object, group.rate_per)
    if (
        not isinstance(per, int | float)
        or isinstance(per, bool)
        or not math.isfinite(per)
        or not 0 <= per <= MAX_RATE_SECONDS
    ):
        raise InvalidArgument(
            f"job {job_id!r}: group rate per must be seconds from 0 to {MAX_RATE_SECONDS:g}, "
            f"got {per!r}"
        )
    if (group.rate_count == 0) != (per == 0):
        raise InvalidArgument(
            f"job {job_id!r}: a group rate needs both a count and a window (per), or neither"
        )


def _whole(job_id: str, what: str, value: object, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise InvalidArgument(
            f"job {job_id!r}: {what} must be a whole number from 0 (no limit) to {most}, "
            f"got {value!r}"
        )


def split_limit(limit: int, grouped_ready: bool, plain_ready: bool, coin: bool) -> int:
    """How many of a fetch's ``limit`` go to groups first: all of it when only groups have
    runnable jobs, none when only plain jobs do, else half (rounded up). With a limit of 1 and
    both kinds runnable, ``coin`` (a fair random bit of the fetch) picks the side, so each gets
    half the starts. Whatever one side leaves unused, the other may take in the same fetch."""
    if not grouped_ready:
        return 0
    if not plain_ready:
        return limit
    if limit == 1:
        return 1 if coin else 0
    return (limit + 1) // 2


def group_turn(served_at: float, rate_free_at: float | None, blocked_until: float | None) -> float:
    """A group's turn: when it was last served, or later, when its rate window frees or its
    block ends. Eligible groups are served in turn order."""
    turn = served_at
    if rate_free_at is not None:
        turn = max(turn, rate_free_at)
    if blocked_until is not None:
        turn = max(turn, blocked_until)
    return turn
