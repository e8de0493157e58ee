"""Rules every driver applies the same way, kept in one place so the backends cannot drift.

What happens next to a job is decided in the core (``conveyor.core``); a driver makes the chosen
transition atomic. Two rules must still be checked inside the atomic step, because what they
depend on can change between the decision and the write; each is named here, documented once,
and pinned by the conformance suite:

* **Cancel wins** (:data:`RUNS_AGAIN`): a transition that would run the job again (retry,
  snooze, hand-back, a rescue's requeue) of a job with a pending cancel request ends it
  ``cancelled`` instead, with :func:`cancelled_error` of the reason it would have run again.
  A cancel can land after the worker decided, so only the write can see it.
* **Fenced by token**: a finish or rescue applies only while the job is ``active`` with the lease
  token the caller holds. A finish repeated after its reply was lost finds the job no longer
  active but still carrying that token, and reports ``ok`` without applying anything twice
  (:func:`finish_was_applied`).

The rest are shared helpers: input checks made before anything is written, the run order of
queued jobs, and the bounded history of attempt errors.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Final, TypeVar, cast

from conveyor import _validation
from conveyor._errors import InvalidArgument
from conveyor.drivers.rates import MAX_RATE_COUNT, MAX_RATE_SECONDS
from conveyor.drivers.records import (
    AttemptError,
    FinishJob,
    JobRecord,
    JobState,
    NewJob,
    RateLimit,
    RescueJob,
    TransitionKind,
)

T = TypeVar("T")

RETRYABLE_STATES: Final = frozenset({JobState.FAILED, JobState.CANCELLED})

# Cancel wins: finishes that would run the job again; a pending cancel turns them into a
# cancellation.
RUNS_AGAIN: Final = frozenset({TransitionKind.RETRY, TransitionKind.SNOOZE, TransitionKind.REQUEUE})
RESCUE_KINDS: Final = frozenset(
    {TransitionKind.REQUEUE, TransitionKind.FAIL, TransitionKind.CANCEL}
)

CANCELLED_ERROR: Final = "cancelled"
LOST_WHILE_CANCELLING: Final = "the worker lost the job before it stopped"

# A job keeps the errors of its last HISTORY_LIMIT attempts, each cut to HISTORY_ERROR_CHARS
# (the latest error is also kept whole in ``JobRecord.error``).
HISTORY_LIMIT: Final = 20
HISTORY_ERROR_CHARS: Final = 2000


def resolve_now(now: float | None) -> float:
    """The caller's ``now``, or this host's clock when it is ``None``."""
    return time.time() if now is None else now


# -- input checks: a batch is refused whole, before anything of it is written -----------------


def check_now(now: float | None) -> None:
    if now is not None and not (math.isfinite(now) and 0 <= now < _validation.MAX_EPOCH):
        raise InvalidArgument(f"now must be a finite epoch time between 1970 and 2200, got {now!r}")


def _check_text(text: str | None, what: str) -> None:
    if text is None:
        return
    if "\x00" in text:  # PostgreSQL's text cannot hold one; no backend may differ from it
        raise InvalidArgument(
            f"{what} holds a NUL character; make it writable first "
            "(conveyor.core.serialization.writable_text)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"{what} is not valid text ({exc.reason} at {exc.start}); make it writable first "
            "(conveyor.core.serialization.writable_text)"
        ) from None


def check_new_jobs(jobs: Sequence[NewJob]) -> None:
    """Refuse a batch holding a job whose numbers or text a backend could not store exactly."""
    for job in jobs:
        for text, what in ((job.id, "id"), (job.name, "name"), (job.queue, "queue")):
            _check_text(text, f"job {job.id!r}: {what}")
        if job.run_at is not None and not (
            math.isfinite(job.run_at) and 0 <= job.run_at < _validation.MAX_EPOCH
        ):
            raise InvalidArgument(f"job {job.id!r}: run_at must be between 1970 and 2200")
        _validation.seconds(job.delay, f"job {job.id!r}: delay", error=InvalidArgument)
        _validation.priority(job.priority, f"job {job.id!r}: priority", error=InvalidArgument)
        _validation.attempts(
            job.max_attempts, f"job {job.id!r}: max_attempts", error=InvalidArgument
        )


def check_finishes(finishes: Sequence[FinishJob]) -> None:
    """Refuse a batch holding an invalid finish (an unknown kind, a delay that is not a finite
    number of seconds within 100 years), naming the job, before anything of it is applied."""
    for finish in finishes:
        kind = cast(object, finish.kind)  # a caller outside the checker's view may pass anything
        if not isinstance(kind, TransitionKind):
            raise InvalidArgument(f"job {finish.job_id!r}: unknown transition {finish.kind!r}")
        _validation.seconds(finish.delay, f"job {finish.job_id!r}: delay", error=InvalidArgument)
        if not finish.token:
            raise InvalidArgument(f"job {finish.job_id!r}: a finish needs the lease token")
        _check_text(finish.error, f"job {finish.job_id!r}: error")


def check_rate_limits(limits: Sequence[RateLimit]) -> None:
    """Refuse limits a backend could not keep exactly: a count outside 1 to
    :data:`MAX_RATE_COUNT`, a window that is not a positive number of seconds up to a day, or a
    queue limited twice."""
    seen: set[str] = set()
    for limit in limits:
        _check_text(limit.queue, f"rate limit of queue {limit.queue!r}: queue")
        count = cast(object, limit.count)
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= MAX_RATE_COUNT
        ):
            raise InvalidArgument(
                f"rate limit of queue {limit.queue!r}: count must be a whole number from 1 to "
                f"{MAX_RATE_COUNT}, got {limit.count!r}"
            )
        check_rate_seconds(limit.per, f"rate limit of queue {limit.queue!r}: per", positive=True)
        if limit.queue in seen:
            raise InvalidArgument(f"queue {limit.queue!r} has more than one rate limit")
        seen.add(limit.queue)


def check_rate_seconds(value: object, what: str, *, positive: bool = False) -> float:
    """A rate limit's window or block: finite seconds, at most :data:`MAX_RATE_SECONDS`."""
    seconds = _validation.seconds(value, what, error=InvalidArgument, positive=positive)
    if seconds > MAX_RATE_SECONDS:
        raise InvalidArgument(f"{what} must be at most {MAX_RATE_SECONDS:g} s, got {value!r}")
    return seconds


def check_rescues(rescues: Sequence[RescueJob]) -> None:
    for rescue in rescues:
        if rescue.kind not in RESCUE_KINDS:
            raise InvalidArgument(
                f"job {rescue.job_id!r}: a rescue requeues, fails or cancels, not {rescue.kind!r}"
            )
        stalls = cast(object, rescue.stalls)
        if not isinstance(stalls, int) or rescue.stalls < 0:
            raise InvalidArgument(f"job {rescue.job_id!r}: invalid stall count {rescue.stalls!r}")
        _check_text(rescue.error, f"job {rescue.job_id!r}: error")


# -- the two rules checked inside the atomic step ----------------------------------------------


def cancelled_error(error: str | None) -> str:
    """The error of a job cancelled on request instead of being run again: ``cancelled``,
    followed by the reason it would have run again, if any."""
    return CANCELLED_ERROR if not error else f"{CANCELLED_ERROR}: {error}"


def cancel_wins(kind: TransitionKind, cancel_requested: bool) -> bool:
    """Whether a pending cancel request turns this transition into a cancellation."""
    return cancel_requested and kind in RUNS_AGAIN


def finish_was_applied(job: JobRecord, token: str) -> bool:
    """A finish with ``token`` finds ``job`` already moved on by an earlier call with the same
    token (its reply was lost and the caller tried again): nothing to do, and nothing lost."""
    return job.state is not JobState.ACTIVE and job.lease_token == token


# -- run order ---------------------------------------------------------------------------------

RunOrder = tuple[int, float, int]


def run_order(job: JobRecord) -> RunOrder:
    """The order queued jobs run in: lowest priority first, then earliest run time, then
    enqueue order."""
    return (job.priority, job.run_at, job.seq)


def first_in_run_order(candidates: Iterable[tuple[RunOrder, T]], limit: int) -> list[T]:
    """Of each queue's first candidates, the overall first ``limit`` in run order: how a fetch
    over several queues picks what to lease (each queue offers at most ``limit`` of its own)."""
    return [item for _, item in heapq.nsmallest(max(limit, 0), candidates, key=lambda c: c[0])]


# -- history -------------------------------------------------------------------------------------


def with_error(
    history: Sequence[AttemptError], attempt: int, at: float, error: str
) -> tuple[AttemptError, ...]:
    """``history`` with one more entry, keeping the last :data:`HISTORY_LIMIT`."""
    entry = AttemptError(attempt, at, error[:HISTORY_ERROR_CHARS])
    return (*history, entry)[-HISTORY_LIMIT:]


def history_to_json(history: Sequence[AttemptError]) -> str:
    return json.dumps([[e.attempt, e.at, e.error] for e in history], separators=(",", ":"))


def history_from_json(text: str | bytes | None) -> tuple[AttemptError, ...]:
    """Read a stored history; anything unreadable reads as no history (inspection must work
    around a job written by a foreign producer)."""
    if not text:
        return ()
    try:
        entries = json.loads(text)
        return tuple(AttemptError(int(a), float(t), str(e)) for a, t, e in entries)
    except (ValueError, TypeError):
        return ()
