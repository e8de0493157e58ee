"""Rules every driver applies the same way, kept in one place so the backends cannot drift."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from conveyor.drivers.records import FinishJob, JobState, TransitionKind

RETRYABLE_STATES: Final = frozenset({JobState.FAILED, JobState.CANCELLED})

# Finishes that would run the job again; a pending cancel request turns them into a cancellation.
RUNS_AGAIN: Final = frozenset({TransitionKind.RETRY, TransitionKind.SNOOZE, TransitionKind.REQUEUE})
NEEDS_RUN_AT: Final = frozenset({TransitionKind.RETRY, TransitionKind.SNOOZE})

CANCELLED_ERROR: Final = "cancelled"
LOST_WHILE_CANCELLING: Final = "the worker lost the job before it stopped"


def resolve_now(now: float | None) -> float:
    """The caller's ``now``, or this host's clock when it is ``None``."""
    return time.time() if now is None else now


def validate_finishes(finishes: Sequence[FinishJob]) -> None:
    """Reject a batch holding an invalid transition before anything of it is applied."""
    for finish in finishes:
        if finish.kind in NEEDS_RUN_AT and finish.run_at is None:
            raise ValueError(f"a {finish.kind} of job {finish.job_id!r} needs run_at")


def cancelled_error(error: str | None) -> str:
    """The error of a job cancelled on request instead of being run again: ``cancelled``,
    followed by the reason it would have run again, if any."""
    return CANCELLED_ERROR if not error else f"{CANCELLED_ERROR}: {error}"


def stalled_error(stalls: int, max_stalls: int) -> str:
    """The error of a job failed by rescue after stalling more than ``max_stalls`` times."""
    return stalled_error_template(max_stalls).replace("{stalls}", str(stalls))


def stalled_error_template(max_stalls: int) -> str:
    """:func:`stalled_error` with ``{stalls}`` in place of the count, for a backend that fills it
    in where the count is known (inside a Redis script)."""
    return (
        f"worker lost the job {{stalls}} times (max_stalls={max_stalls}); "
        "it may be crashing its worker"
    )
