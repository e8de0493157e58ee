"""What happens to a job whose worker stopped renewing its lease: the rescuer's decision.

A lost lease is weak evidence against a job: when a process dies, every job it ran is lost with
it, and most of them were only standing next to the one that killed it. So the first loss is
never held against a job; it is requeued, and as a job that has been lost (``stalls > 0``) it
runs alone in its worker from then on (the worker marks the lease ``isolated`` when it starts
it). Only a loss while running alone is evidence: after ``max_stalls`` such losses (at least
one) the job is failed as a poison pill. The losses while alone are counted from the job's
history: each rescue's ``WorkerLost`` entry carries the count of the attempt's losses while
alone so far (a loss gives the attempt back, so all the losses of one attempt share its
number, and a retry starts afresh). Losses beside other jobs, or while the job waited for its
turn to run alone, never count however many there were.

A pending cancel request wins: the job is cancelled instead of being run again.
"""

from __future__ import annotations

import re

from conveyor.drivers.common import LOST_WHILE_CANCELLING, cancelled_error
from conveyor.drivers.records import JobRecord, RescueJob, TransitionKind

PREFIX = "WorkerLost: "
MAX_STALLS = 10  # the most WorkerConfig accepts
# Each requeue's entry says how many of the attempt's losses were while alone so far; the
# count is read back from the latest one, so other entries (hand-backs) cannot wash it out.
_ALONE_COUNT = re.compile(r"(\d+) of them while it ran alone")


def losses_while_alone(job: JobRecord) -> int:
    """How many losses of the job's current attempt happened while it ran alone, before now."""
    for entry in reversed(job.errors):
        if entry.attempt != job.attempt:
            return 0  # a new attempt (after a retry) starts afresh
        if entry.error.startswith(PREFIX):
            found = _ALONE_COUNT.search(entry.error)
            return int(found.group(1)) if found else 0
    return 0


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
            f"{PREFIX}the job's worker was lost {alone} time(s) with the job running alone "
            f"({stalls} losses in all, max_stalls={max_stalls}); it is likely crashing its worker"
        )
        return RescueJob(job.id, token, TransitionKind.FAIL, stalls, error, job.queue)
    where = "while it ran alone" if job.isolated else "with the other jobs of its worker"
    error = (
        f"{PREFIX}the worker running attempt {job.attempt} stopped renewing its lease {where} "
        f"(lost {stalls} time(s), {alone} of them while it ran alone); requeued to run alone, "
        "without using an attempt"
    )
    return RescueJob(job.id, token, TransitionKind.REQUEUE, stalls, error, job.queue)
