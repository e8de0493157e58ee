"""What happens to a job whose worker stopped renewing its lease: the rescuer's decision.

A lost lease is weak evidence against a job: when a process dies, every job it ran is lost with
it, and most of them were only standing next to the one that killed it. So the first loss is
never held against a job; it is requeued, and as a job that has been lost (``stalls > 0``) it
runs alone in its worker from then on (the worker marks the lease ``isolated`` when it starts
it). Only a loss while running alone is evidence: once such a loss brings the job's stall count
above ``max_stalls``, it is failed as a poison pill.

A pending cancel request wins: the job is cancelled instead of being run again.
"""

from __future__ import annotations

from conveyor.drivers.common import LOST_WHILE_CANCELLING, cancelled_error, stalled_error
from conveyor.drivers.records import JobRecord, RescueJob, TransitionKind


def decide_rescue(job: JobRecord, max_stalls: int) -> RescueJob:
    """The transition for ``job``, an active job whose lease expired."""
    stalls = job.stalls + 1
    token = job.lease_token or ""
    if job.cancel_requested:
        error = cancelled_error(LOST_WHILE_CANCELLING)
        return RescueJob(job.id, token, TransitionKind.CANCEL, stalls, error, job.queue)
    if job.isolated and stalls > max_stalls:
        error = f"WorkerLost: {stalled_error(stalls, max_stalls)}"
        return RescueJob(job.id, token, TransitionKind.FAIL, stalls, error, job.queue)
    where = "while it ran alone" if job.isolated else "with the other jobs of its worker"
    error = (
        f"WorkerLost: the worker running attempt {job.attempt} stopped renewing its lease "
        f"{where} (lost {stalls} time(s)); requeued to run alone, without using an attempt"
    )
    return RescueJob(job.id, token, TransitionKind.REQUEUE, stalls, error, job.queue)
