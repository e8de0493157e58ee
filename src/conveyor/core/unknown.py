"""What happens to a job whose name the worker that fetched it has no handler for.

During a rolling deploy, a producer running new code can enqueue a job kind that workers still
running the old code do not know. Failing it would send it to the dead-letter set without ever
running; instead it is handed back, without spending an attempt, to be fetched again after a
growing delay (10 s, 20 s, 40 s ... up to 10 minutes) by a worker that may know it. Only when no
worker has known it for :data:`UNKNOWN_GRACE` seconds is it failed with ``UnknownJob``.

The hand-backs are counted from the job's history: each one records an ``UnknownJob`` entry for
the same attempt number (the attempt is given back), so the first entry of the latest run of
them tells since when the job has been unknown. Within the grace period there are at most about
a dozen of them, well inside the history a job keeps.

A backend that filters fetches by name never hands such a job to a worker that cannot run it,
until it has been runnable for :data:`UNKNOWN_GRACE` (``FetchParams.unknown_after``): a worker
that then gets it knows no worker that could run it came for it in all that time.

Workers publish the names they serve in their heartbeats. A job whose name a live worker of its
queue knows is never failed as unknown, however long it waited: that worker is only behind (a
second fleet sharing the queue, with a backlog), and the job is handed back for it.

A job enqueued by a newer version of its definition than the worker's (see
:mod:`conveyor.core.versions`) is handed back by the same rule (:func:`decide_newer`): the
worker knows the name but cannot read the payload yet. Both kinds of hand-back make one streak:
either way, no worker that fetched the job since its first entry could run it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from conveyor.drivers.records import AttemptError, JobRecord

if TYPE_CHECKING:
    from conveyor.core.outcome import Transition

UNKNOWN_GRACE: Final = 3600.0
FIRST_DELAY: Final = 10.0
MAX_DELAY: Final = 600.0
PREFIX: Final = "UnknownJob: "
NEWER_PREFIX: Final = "NewerJobVersion: "
_HANDBACKS: Final = (PREFIX, NEWER_PREFIX)


def handback_delay(handbacks: int) -> float:
    """The delay before the ``handbacks``-th try (1 for the first hand-back)."""
    return min(FIRST_DELAY * 2.0 ** max(handbacks - 1, 0), MAX_DELAY)


def unknown_streak(record: JobRecord) -> list[AttemptError]:
    """The hand-backs of this attempt (for an unknown name or a newer version), oldest first."""
    streak: list[AttemptError] = []
    for entry in reversed(record.errors):
        if entry.attempt != record.attempt or not entry.error.startswith(_HANDBACKS):
            break
        streak.append(entry)
    streak.reverse()
    return streak


def decide_unknown(
    record: JobRecord,
    known: tuple[str, ...],
    *,
    filtered: bool = False,
    known_elsewhere: bool = False,
) -> Transition:
    """``filtered``: the backend fetches by name, so this job waited unfetched since it became
    runnable (``run_at``) for want of a worker that knows it. ``known_elsewhere``: a live worker
    of the job's queue has a handler for it, so it is never failed here."""
    names = ", ".join(sorted(known)) or "none"
    if known_elsewhere:
        return _hand_back(
            record,
            lambda delay: (
                f"{PREFIX}no handler for job {record.name!r} in worker {record.worker_id}, but a "
                f"live worker of queue {record.queue!r} has one; handed back for it without "
                f"using an attempt, next try in {delay:g}s"
            ),
        )
    return _hand_back(
        record,
        lambda delay: (
            f"{PREFIX}no handler for job {record.name!r} in worker {record.worker_id} (it knows: "
            f"{names}); handed back without using an attempt, next try in {delay:g}s"
        ),
        fail=lambda handbacks: (
            f"{PREFIX}no handler is registered for job {record.name!r}: no worker that fetched it "
            f"in the last {UNKNOWN_GRACE / 60:g} minutes knew it ({handbacks} hand-backs; the "
            f"last worker knew: {names}). Deploy a worker with a handler for it, then retry it"
        ),
        filtered=filtered,
    )


def decide_newer(record: JobRecord, stored: int, current: int) -> Transition:
    """The job was enqueued by version ``stored`` of its definition and this worker has version
    ``current`` (older): handed back without spending an attempt, as an unknown name is, and
    failed only when no worker that fetched it for :data:`UNKNOWN_GRACE` seconds could read it."""
    what = f"job {record.name!r} was enqueued by version {stored} of its definition"
    return _hand_back(
        record,
        lambda delay: (
            f"{NEWER_PREFIX}{what}, worker {record.worker_id} has version {current}; handed back "
            f"without using an attempt, next try in {delay:g}s"
        ),
        fail=lambda handbacks: (
            f"{NEWER_PREFIX}{what}: no worker that fetched it in the last "
            f"{UNKNOWN_GRACE / 60:g} minutes had that version ({handbacks} hand-backs; the last "
            f"had version {current}). Deploy workers with version {stored} or later, then retry it"
        ),
    )


def _hand_back(
    record: JobRecord,
    handed_back: Callable[[float], str],
    *,
    fail: Callable[[int], str] | None = None,
    filtered: bool = False,
) -> Transition:
    """The one rule: hand the job back with a growing delay, or, given ``fail`` (the error for
    a count of hand-backs), fail it once no worker could run it for :data:`UNKNOWN_GRACE`."""
    from conveyor.core.outcome import Fail, SnoozeFor

    streak = unknown_streak(record)
    if fail is not None:
        now = record.started_at if record.started_at is not None else record.run_at
        since = streak[0].at if streak else (min(record.run_at, now) if filtered else now)
        if now - since >= UNKNOWN_GRACE:
            return Fail(fail(len(streak)))
    delay = handback_delay(len(streak) + 1)
    return SnoozeFor(delay, handed_back(delay))
