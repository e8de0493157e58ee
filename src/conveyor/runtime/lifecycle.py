"""What a decided transition means for storage, for the log and for the worker's counters."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from conveyor._slots import fast_constructor
from conveyor.core.outcome import (
    Cancel,
    Complete,
    Fail,
    PauseGroup,
    PauseQueue,
    Requeue,
    RetryIn,
    SnoozeFor,
    Transition,
)
from conveyor.core.serialization import writable_text
from conveyor.drivers.records import FinishJob, JobRecord, TransitionKind

log = logging.getLogger("conveyor.worker")


@dataclass
class WorkerStats:
    """Transitions this worker wrote (a refused one counts as ``lease_lost``)."""

    fetched: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    snoozed: int = 0
    cancelled: int = 0
    requeued: int = 0
    lease_lost: int = 0

    def count(self, kind: TransitionKind) -> None:
        match kind:
            case TransitionKind.COMPLETE:
                self.completed += 1
            case TransitionKind.RETRY:
                self.retried += 1
            case TransitionKind.FAIL:
                self.failed += 1
            case TransitionKind.SNOOZE:
                self.snoozed += 1
            case TransitionKind.CANCEL:
                self.cancelled += 1
            case TransitionKind.REQUEUE:
                self.requeued += 1


def finish_for(record: JobRecord, transition: Transition) -> FinishJob:
    """The fenced write that applies ``transition`` to the attempt ``record`` describes, with
    its text made writable (a handler's error message can hold anything)."""
    assert record.lease_token is not None
    job_id, token, queue = record.id, record.lease_token, record.queue
    match transition:
        case Complete(result=result):  # almost every finish: the cheaper constructor
            return _new_finish(job_id, token, TransitionKind.COMPLETE, result, None, 0.0, queue)
        case RetryIn(delay=delay, error=error):
            kind = TransitionKind.RETRY
            return FinishJob(job_id, token, kind, error=_text(error), delay=delay, queue=queue)
        case SnoozeFor(delay=delay, error=error):
            kind = TransitionKind.SNOOZE
            return FinishJob(job_id, token, kind, error=_text(error), delay=delay, queue=queue)
        case Fail(error=error):
            return FinishJob(job_id, token, TransitionKind.FAIL, error=_text(error), queue=queue)
        case Cancel(error=error):
            return FinishJob(job_id, token, TransitionKind.CANCEL, error=_text(error), queue=queue)
        case Requeue() | PauseQueue() | PauseGroup():
            return FinishJob(job_id, token, TransitionKind.REQUEUE, queue=queue)
    raise AssertionError(f"unknown transition {transition!r}")  # pragma: no cover


# FinishJob(...) with every field, in order, at a third of the cost (see conveyor._slots).
_new_finish: Final = fast_constructor(FinishJob)


def _text(error: str | None) -> str | None:
    return None if error is None else writable_text(error)


def _after(delay: float) -> str:
    return f"in {delay:g}s"


def log_job(level: int, message: str, event: str, record: JobRecord, **extra: Any) -> None:
    """One structured lifecycle line about ``record``."""
    if not log.isEnabledFor(level):
        return
    fields = {
        "event": event,
        "job_name": record.name,
        "job_id": record.id,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
        "queue": record.queue,
    }
    fields.update(extra)
    log.log(level, message, extra=fields)


def log_transition(record: JobRecord, transition: Transition, duration: float) -> None:
    match transition:
        case Complete():
            log_job(logging.INFO, "job completed", "completed", record, duration=duration)
        case RetryIn(delay=delay, error=error):
            log_job(
                logging.WARNING,
                "job retrying",
                "retrying",
                record,
                duration=duration,
                run_at=_after(delay),
                error=error,
            )
        case Fail(error=error):
            log_job(logging.ERROR, "job failed", "failed", record, duration=duration, error=error)
        case SnoozeFor(delay=delay, error=None):
            log_job(
                logging.INFO,
                "job snoozed",
                "snoozed",
                record,
                duration=duration,
                run_at=_after(delay),
            )
        case SnoozeFor(delay=delay, error=error):
            log_job(
                logging.WARNING,
                "job handed back",
                "handed_back",
                record,
                duration=duration,
                run_at=_after(delay),
                error=error,
            )
        case Cancel():
            log_job(logging.WARNING, "job cancelled", "cancelled", record, duration=duration)
        case PauseQueue(delay=delay, reason=reason):
            log_job(
                logging.WARNING,
                f"job rate limited ({reason}): its queue is paused for {delay:g}s",
                "rate_limited",
                record,
                duration=duration,
            )
        case PauseGroup(delay=delay, reason=reason):
            log_job(
                logging.WARNING,
                f"job rate limited ({reason}): its group {record.group!r} is paused for {delay:g}s",
                "rate_limited",
                record,
                duration=duration,
            )
        case Requeue():
            log_job(
                logging.WARNING,
                "job handed back to the queue",
                "requeued",
                record,
                duration=duration,
            )
