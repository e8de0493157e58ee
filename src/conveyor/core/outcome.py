"""Outcome -> transition: the single place that decides what a finished attempt leads to.

The executor reports what happened (an :data:`Outcome`); :func:`decide` turns it into exactly one
:data:`Transition` that a driver then applies atomically. Drivers never make these choices.

:func:`decide` never raises on a user's value: a ``Backoff`` that raises or returns something
that is not a usable delay (NaN, infinity, negative, over a century) fails that one job with an
error naming its definition, which is where the mistake can be seen and the job retried once
the definition is fixed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from conveyor import _validation
from conveyor.core.backoff import Backoff
from conveyor.core.unknown import decide_newer, decide_unknown
from conveyor.drivers.records import JobRecord


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: bytes


@dataclass(frozen=True, slots=True)
class Errored:
    """The handler raised. ``permanent`` errors skip the remaining attempts."""

    error: str
    permanent: bool = False
    retry_delay: float | None = None  # set by ``Retry(delay=...)``


@dataclass(frozen=True, slots=True)
class TimedOut:
    timeout: float


@dataclass(frozen=True, slots=True)
class Snoozed:
    delay: float


@dataclass(frozen=True, slots=True)
class Throttled:
    """The handler raised ``RateLimited``: an upstream limit was met."""

    retry_after: float
    reason: str = "rate limited"


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Someone cancelled the job while it ran."""


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The worker is shutting down and stopped the job: hand it back untouched."""


@dataclass(frozen=True, slots=True)
class Unhandled:
    """This worker has no handler for the job's name (``known``: the names it has;
    ``filtered``: its backend fetches by name, so the job waited for a worker that knows it;
    ``known_elsewhere``: another live worker of the job's queue has a handler for it)."""

    known: tuple[str, ...]
    filtered: bool = False
    known_elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class NewerVersion:
    """The job was enqueued by version ``stored`` of its definition, newer than the worker's
    ``current``: the worker cannot read its payload yet."""

    stored: int
    current: int


Outcome = (
    Succeeded
    | Errored
    | TimedOut
    | Snoozed
    | CancelRequested
    | Interrupted
    | Unhandled
    | NewerVersion
    | Throttled
)


@dataclass(frozen=True, slots=True)
class Complete:
    result: bytes


@dataclass(frozen=True, slots=True)
class RetryIn:
    """Retry ``delay`` seconds from now (the backend's now)."""

    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class SnoozeFor:
    """Run again ``delay`` seconds from now, giving back the attempt."""

    delay: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    error: str


@dataclass(frozen=True, slots=True)
class Cancel:
    error: str


@dataclass(frozen=True, slots=True)
class Requeue:
    """Back to ``queued`` at once, giving back the attempt it was using."""


@dataclass(frozen=True, slots=True)
class PauseQueue:
    """Start no job of the job's queue for ``delay`` seconds, on any worker (the queue's rate
    limit is blocked first), then put the job back in the queue, giving back its attempt."""

    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class PauseGroup:
    """Start no job of the job's group for ``delay`` seconds, on any worker (the group is
    blocked first), then put the job back in its group, giving back its attempt. Other groups
    and plain jobs of the queue go on."""

    delay: float
    reason: str


Transition = Complete | RetryIn | SnoozeFor | Fail | Cancel | Requeue | PauseQueue | PauseGroup


def decide(
    outcome: Outcome,
    record: JobRecord,
    *,
    backoff: Backoff,
    rng: random.Random,
    rate_limited: bool = False,
) -> Transition:
    """Choose the transition for ``outcome`` of the attempt ``record`` describes.

    ``rate_limited``: the job's definition has a rate limit (so its queue holds no other
    definition). An upstream limit a grouped job meets pauses its group; otherwise, with a
    rate limit, it pauses the whole queue; without one, only the job waits (it is snoozed),
    since other definitions may share the queue."""
    match outcome:
        case Throttled(retry_after=delay, reason=reason):
            bad = _invalid_delay(delay)
            if bad:
                return Fail(
                    f"InvalidArgument: job {record.name!r} was rate limited with a retry_after "
                    f"that {bad}"
                )
            if record.group is not None:
                return PauseGroup(float(delay), reason)
            if rate_limited:
                return PauseQueue(float(delay), reason)
            return SnoozeFor(float(delay))
        case Succeeded(result=result):
            return Complete(result)
        case Snoozed(delay=delay):
            bad = _invalid_delay(delay)
            if bad:
                return Fail(f"InvalidArgument: job {record.name!r} snoozed with a delay that {bad}")
            return SnoozeFor(delay)
        case CancelRequested():
            return Cancel("cancelled while running")
        case Interrupted():
            return Requeue()
        case Unhandled(known=known, filtered=filtered, known_elsewhere=elsewhere):
            return decide_unknown(record, known, filtered=filtered, known_elsewhere=elsewhere)
        case NewerVersion(stored=stored, current=current):
            return decide_newer(record, stored, current)
        case TimedOut(timeout=timeout):
            error = f"TimeoutError: job exceeded its timeout of {timeout:g}s"
            return _retry_or_fail(error, None, record, backoff, rng)
        case Errored(error=error, permanent=True):
            return Fail(error)
        case Errored(error=error, retry_delay=retry_delay):
            return _retry_or_fail(error, retry_delay, record, backoff, rng)
    raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover


def _retry_or_fail(
    error: str, delay: float | None, record: JobRecord, backoff: Backoff, rng: random.Random
) -> Transition:
    attempt, most = record.attempt, record.max_attempts
    if attempt >= most:
        head, sep, rest = error.partition("\n")
        return Fail(f"{head} (attempt {attempt} of {most}, no attempts left){sep}{rest}")
    if delay is not None:
        bad = _invalid_delay(delay)
        if bad:
            return Fail(
                f"InvalidArgument: job {record.name!r} asked to retry after a delay that "
                f"{bad}\n{error}"
            )
        return RetryIn(delay, error)
    try:
        wait = backoff.delay(attempt, rng)
    except Exception as exc:
        return Fail(
            f"InvalidBackoff: the backoff of job {record.name!r} ({_shown(backoff)}) raised "
            f"{type(exc).__name__}: {exc} for attempt {attempt}; fix the definition, then retry "
            f"the job\n{error}"
        )
    bad = _invalid_delay(wait)
    if bad:
        return Fail(
            f"InvalidBackoff: the backoff of job {record.name!r} ({_shown(backoff)}) returned a "
            f"delay for attempt {attempt} that {bad}; fix the definition, then retry the job\n"
            f"{error}"
        )
    return RetryIn(float(wait), error)


def _invalid_delay(value: object) -> str | None:
    """Why ``value`` is not a usable delay, or None if it is one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"is not a number of seconds ({_shown(value)})"
    if isinstance(value, int):  # may be too large for a float (or even for repr)
        if value < 0:
            return f"is not a finite number of seconds >= 0 ({_shown(value)})"
        if value > _validation.MAX_SECONDS:
            return f"is over 100 years ({_shown(value)} s)"
        return None
    if not math.isfinite(value) or value < 0:
        return f"is not a finite number of seconds >= 0 ({_shown(value)})"
    if value > _validation.MAX_SECONDS:
        return f"is over 100 years ({_shown(value)} s)"
    return None


def _shown(value: object) -> str:
    """``repr(value)``, cut short, whatever the value's ``__repr__`` does."""
    try:
        text = repr(value)
    except Exception as exc:  # a huge int, a broken __repr__
        return f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."
