"""Outcome -> transition: the single place that decides what a finished attempt leads to.

The executor reports what happened (an :data:`Outcome`); :func:`decide` turns it into exactly one
:data:`Transition` that a driver then applies atomically. Drivers never make these choices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from conveyor.core.backoff import Backoff


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
class CancelRequested:
    """Someone cancelled the job while it ran."""


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The worker is shutting down and stopped the job: hand it back untouched."""


Outcome = Succeeded | Errored | TimedOut | Snoozed | CancelRequested | Interrupted


@dataclass(frozen=True, slots=True)
class Complete:
    result: bytes


@dataclass(frozen=True, slots=True)
class RetryAt:
    run_at: float
    error: str


@dataclass(frozen=True, slots=True)
class SnoozeUntil:
    run_at: float


@dataclass(frozen=True, slots=True)
class Fail:
    error: str


@dataclass(frozen=True, slots=True)
class Cancel:
    error: str


@dataclass(frozen=True, slots=True)
class Requeue:
    """Back to ``queued`` at once, giving back the attempt it was using."""


Transition = Complete | RetryAt | SnoozeUntil | Fail | Cancel | Requeue


def decide(
    outcome: Outcome,
    *,
    attempt: int,
    max_attempts: int,
    backoff: Backoff,
    now: float,
    rng: random.Random,
) -> Transition:
    """Choose the transition for ``outcome`` of attempt number ``attempt`` (1-based)."""
    match outcome:
        case Succeeded(result=result):
            return Complete(result)
        case Snoozed(delay=delay):
            return SnoozeUntil(now + delay)
        case CancelRequested():
            return Cancel("cancelled while running")
        case Interrupted():
            return Requeue()
        case TimedOut(timeout=timeout):
            return _retry_or_fail(
                f"TimeoutError: job exceeded its timeout of {timeout:g}s",
                None,
                attempt=attempt,
                max_attempts=max_attempts,
                backoff=backoff,
                now=now,
                rng=rng,
            )
        case Errored(error=error, permanent=True):
            return Fail(error)
        case Errored(error=error, retry_delay=retry_delay):
            return _retry_or_fail(
                error,
                retry_delay,
                attempt=attempt,
                max_attempts=max_attempts,
                backoff=backoff,
                now=now,
                rng=rng,
            )
    raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover


def _retry_or_fail(
    error: str,
    delay: float | None,
    *,
    attempt: int,
    max_attempts: int,
    backoff: Backoff,
    now: float,
    rng: random.Random,
) -> Transition:
    if attempt >= max_attempts:
        head, sep, rest = error.partition("\n")
        return Fail(f"{head} (attempt {attempt} of {max_attempts}, no attempts left){sep}{rest}")
    wait = backoff.delay(attempt, rng) if delay is None else delay
    return RetryAt(now + wait, error)
