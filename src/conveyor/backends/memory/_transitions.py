"""The memory model's transitions of one job, as pure functions from record to record: what
each driver must make atomic, written once in its simplest form."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from conveyor.drivers.common import (
    LOST_WHILE_CANCELLING,
    cancel_wins,
    cancelled_error,
    expiry,
    with_error,
)
from conveyor.drivers.records import (
    TERMINAL_STATES,
    FinishJob,
    JobRecord,
    JobState,
    ProgressUpdate,
    RescueJob,
    TransitionKind,
)


def released(job: JobRecord, *, keep_token: bool = False) -> JobRecord:
    """``job`` without its lease. A finish keeps the token, which is how a repeated finish
    recognises its own work (see ``finish_was_applied``)."""
    return dataclasses.replace(
        job,
        lease_token=job.lease_token if keep_token else None,
        lease_expires_at=None,
        worker_id=None,
        cancel_requested=False,
        isolated=False,
    )


def noted(job: JobRecord, error: str | None, at: float) -> JobRecord:
    """``job`` with ``error`` as its last error and in its history (unchanged when None)."""
    if error is None:
        return job
    return dataclasses.replace(
        job, error=error, errors=with_error(job.errors, job.attempt, at, error)
    )


def finished(
    job: JobRecord,
    state: JobState,
    at: float,
    *,
    error: str | None = None,
    result: bytes | None = None,
    keep_token: bool = False,
) -> JobRecord:
    assert state in TERMINAL_STATES
    done = dataclasses.replace(
        noted(released(job, keep_token=keep_token), error, at),
        state=state,
        finished_at=at,
        result=result,
        expires_at=expiry(state, at, job.keep_completed, job.keep_failed),
    )
    return dataclasses.replace(done, error=None) if state is JobState.COMPLETED else done


def apply_finish(job: JobRecord, finish: FinishJob, at: float) -> JobRecord:
    if cancel_wins(finish.kind, job.cancel_requested):
        # Someone asked to cancel the job before it stopped: it must not run again.
        error = cancelled_error(finish.error)
        return finished(job, JobState.CANCELLED, at, error=error, keep_token=True)
    match finish.kind:
        case TransitionKind.COMPLETE:
            return finished(job, JobState.COMPLETED, at, result=finish.result, keep_token=True)
        case TransitionKind.FAIL:
            return finished(job, JobState.FAILED, at, error=finish.error, keep_token=True)
        case TransitionKind.CANCEL:
            return finished(job, JobState.CANCELLED, at, error=finish.error, keep_token=True)
        case TransitionKind.RETRY:
            return dataclasses.replace(
                noted(released(job, keep_token=True), finish.error, at),
                state=JobState.RETRYING,
                run_at=at + finish.delay,
            )
        case TransitionKind.SNOOZE:
            return dataclasses.replace(
                noted(released(job, keep_token=True), finish.error, at),
                state=JobState.SCHEDULED,
                run_at=at + finish.delay,
                attempt=max(job.attempt - 1, 0),
            )
        case TransitionKind.REQUEUE:
            return dataclasses.replace(
                noted(released(job, keep_token=True), finish.error, at),
                state=JobState.QUEUED,
                attempt=max(job.attempt - 1, 0),
            )
    raise AssertionError(f"unknown transition {finish.kind!r}")  # pragma: no cover


def apply_rescue(job: JobRecord, rescue: RescueJob, at: float) -> JobRecord:
    kind = rescue.kind
    error = rescue.error
    if cancel_wins(kind, job.cancel_requested):
        kind, error = TransitionKind.CANCEL, cancelled_error(LOST_WHILE_CANCELLING)
    job = dataclasses.replace(job, stalls=rescue.stalls)
    match kind:
        case TransitionKind.FAIL:
            return finished(job, JobState.FAILED, at, error=error)
        case TransitionKind.CANCEL:
            return finished(job, JobState.CANCELLED, at, error=error)
        case _:
            return dataclasses.replace(
                noted(released(job), error, at),
                state=JobState.QUEUED,
                attempt=max(job.attempt - 1, 0),
                run_at=at,
            )


def progressed(job: JobRecord, update: ProgressUpdate, at: float) -> JobRecord:
    return dataclasses.replace(
        job, progress=float(update.fraction), progress_message=update.message, progress_at=at
    )


def expired(jobs: Iterable[JobRecord], at: float, limit: int) -> list[JobRecord]:
    """Finished jobs whose own retention expired by ``at``, earliest expiry first, at most
    ``limit``: what a prune deletes first."""
    due = (
        j
        for j in jobs
        if j.expires_at is not None and j.expires_at <= at and j.state in TERMINAL_STATES
    )
    return sorted(due, key=lambda j: (j.expires_at or 0.0, j.seq))[: max(limit, 0)]
