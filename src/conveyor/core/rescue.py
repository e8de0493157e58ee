"""What happens to a job whose worker stopped renewing its lease: the rescuer's decision.

A lost lease is weak evidence against a job: when a process dies, every job it ran is lost with
it, and most of them were only standing next to the one that killed it. So the first loss is
never held against a job; it is requeued, and as a job that has been lost (``stalls > 0``) it
runs alone in its worker from then on (the worker marks the lease ``isolated`` when it starts
it). Only a loss while running alone is evidence: after ``max_stalls`` such losses (at least
one) the job is failed as a poison pill. The losses while alone are counted from the job's
history, where each rescue leaves its ``WorkerLost`` entry, so losses beside other jobs, or
while the job waited for its turn to run alone, never count however many there were.

A pending cancel request wins: the job is cancelled instead of being run again.
"""

from __future__ import annotations

from conveyor.drivers.common import LOST_WHILE_CANCELLING, cancelled_error
from conveyor.drivers.records import JobRecord, RescueJob, TransitionKind

PREFIX = "WorkerLost: "
ALONE = "while it ran alone"


def losses_while_alone(job: JobRecord) -> int:
    """How many of the job's recorded losses happened while it ran alone."""
    return sum(1 for e in job.errors if e.error.startswith(PREFIX) and ALONE in e.error)


def decide_rescue(job: JobRecord, max_stalls: int) -> RescueJob:
    """The transition for ``job``, an active job whose lease expired."""
    stalls = job.stalls + 1
    token = job.lease_token or ""
    if job.cancel_requested:
        error = cancelled_error(LOST_WHILE_CANCELLING)
        return RescueJob(job.id, token, TransitionKind.CANCEL, stalls, error, job.queue)
    alone = losses_while_alone(job) + (1 if job.isolated else 0)
    if job.isolated and alone >= max(max_stalls, 1):
        error = (
            f"{PREFIX}the worker was lost {alone} time(s) {ALONE} ({stalls} losses in all, "
            f"max_stalls={max_stalls}); it is likely crashing its worker"
        )
        return RescueJob(job.id, token, TransitionKind.FAIL, stalls, error, job.queue)
    where = ALONE if job.isolated else "with the other jobs of its worker"
    error = (
        f"{PREFIX}the worker running attempt {job.attempt} stopped renewing its lease "
        f"{where} (lost {stalls} time(s)); requeued to run alone, without using an attempt"
    )
    return RescueJob(job.id, token, TransitionKind.REQUEUE, stalls, error, job.queue)
