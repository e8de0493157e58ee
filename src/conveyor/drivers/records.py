"""Typed, frozen values that cross the driver boundary.

Drivers receive and return only these. Payloads and results stay as the JSON bytes the engine
encoded; drivers never parse them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class JobState(enum.StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    ACTIVE = "active"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
WAITING_STATES = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING})


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One entry of a job's history: what went wrong with attempt number ``attempt``, and when
    (backend clock). A job keeps the last :data:`conveyor.drivers.common.HISTORY_LIMIT`."""

    attempt: int
    at: float
    error: str


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored. ``attempt`` counts attempts started (0 until first fetched)."""

    id: str
    queue: str
    name: str
    payload: bytes
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    run_at: float
    enqueued_at: float
    seq: int
    started_at: float | None = None
    finished_at: float | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    worker_id: str | None = None
    stalls: int = 0
    cancel_requested: bool = False
    result: bytes | None = None
    # The error of the latest attempt that had one; cleared when the job completes.
    error: str | None = None
    # Errors of earlier attempts, oldest first (the last one is ``error``'s, while it is set).
    errors: tuple[AttemptError, ...] = ()
    # The current attempt was declared to run alone in its worker (see ``Lease.isolated``), so
    # losing it is evidence against the job itself.
    isolated: bool = False


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    queue: str
    name: str
    payload: bytes
    priority: int = 0
    max_attempts: int = 3
    run_at: float | None = None  # None: runnable now (backend clock)
    delay: float = 0.0  # added to the backend's now when ``run_at`` is None


class InsertStatus(enum.StrEnum):
    INSERTED = "inserted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class InsertResult:
    id: str
    status: InsertStatus
    state: JobState


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` jobs of ``queue`` start in any window of ``per`` seconds, across every
    worker (see :mod:`conveyor.core.rate` for the sliding log every backend keeps)."""

    queue: str
    count: int
    per: float


@dataclass(frozen=True, slots=True)
class FetchParams:
    queues: tuple[str, ...]
    limit: int
    worker_id: str
    lease_seconds: float
    # The job names the caller can run. A backend with ``Capability.FETCH_BY_NAME`` leases only
    # these (None: any), and jobs of other names once they have been runnable for
    # ``unknown_after`` seconds (so that a job no worker knows is failed in the end rather than
    # kept forever); other backends lease anything and the caller hands back what it cannot run.
    names: tuple[str, ...] | None = None
    unknown_after: float | None = None
    # The queues whose starts are limited (see ``RateLimit``): the fetch leases no more of a
    # queue's jobs than its limit allows at ``now``, and logs their starts in the same step.
    rate_limits: tuple[RateLimit, ...] = ()


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: str
    token: str
    # The job's queue when the caller knows it (a worker always does): a backend that keeps
    # each queue apart (Redis Cluster) then finds the job without looking for it.
    queue: str | None = None
    # Record on the job that this attempt now runs alone in its worker (``JobRecord.isolated``).
    isolated: bool = False


@dataclass(frozen=True, slots=True)
class ExtendResult:
    lost: tuple[str, ...]  # ids whose lease is no longer held with the given token
    cancel_requested: tuple[str, ...]  # ids someone asked to cancel


class TransitionKind(enum.StrEnum):
    COMPLETE = "complete"
    RETRY = "retry"  # -> retrying, ``delay`` seconds from now
    SNOOZE = "snooze"  # -> scheduled, ``delay`` seconds from now, attempt given back
    FAIL = "fail"  # -> failed
    CANCEL = "cancel"  # -> cancelled
    REQUEUE = "requeue"  # -> queued now, attempt given back


@dataclass(frozen=True, slots=True)
class FinishJob:
    """Apply one transition to an active job, fenced by its lease token.

    ``delay`` (retry and snooze) is added to the backend's clock, as for ``NewJob``, so a
    worker's clock never decides when a job runs again. An ``error`` becomes the job's last
    error and joins its history."""

    job_id: str
    token: str
    kind: TransitionKind
    result: bytes | None = None
    error: str | None = None
    delay: float = 0.0
    queue: str | None = None  # the job's queue when known, as for ``Lease``


@dataclass(frozen=True, slots=True)
class RescueJob:
    """What the rescuer decided for an active job whose lease expired (``kind`` is REQUEUE,
    FAIL or CANCEL), fenced by the lease token it saw: applied only if the job is still active
    with that token and its lease still expired."""

    job_id: str
    token: str
    kind: TransitionKind
    stalls: int  # the job's new stall count
    error: str
    queue: str | None = None


class TransitionStatus(enum.StrEnum):
    OK = "ok"  # applied (or, for a finish, applied already by an earlier call with this token)
    LEASE_LOST = "lease_lost"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class TransitionResult:
    job_id: str
    status: TransitionStatus


@dataclass(frozen=True, slots=True)
class Retention:
    """How many finished jobs to keep. ``None`` keeps everything of that kind."""

    completed_max_count: int | None = 1000
    completed_max_age: float | None = None
    failed_max_age: float | None = None  # failed jobs stay until purged by default
    cancelled_max_age: float | None = 7 * 24 * 3600.0


class ChangeStatus(enum.StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"
    WRONG_STATE = "wrong_state"
    CANCEL_REQUESTED = "cancel_requested"  # active job: its worker is told to stop it


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """What ``Queue.retry`` and ``Queue.cancel`` did to one job."""

    job_id: str
    status: ChangeStatus
    state: JobState | None


@dataclass(frozen=True, slots=True)
class ListParams:
    queue: str | None = None
    states: tuple[JobState, ...] = ()
    name: str | None = None
    before_seq: int | None = None  # keyset cursor: newest first, strictly older than this
    limit: int = 50


@dataclass(frozen=True, slots=True)
class PurgeParams:
    queue: str | None = None
    states: tuple[JobState, ...] = (JobState.FAILED,)
    finished_before: float | None = None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue, whether it is paused, and its jobs by state (``Queue.queues``)."""

    name: str
    paused: bool
    counts: dict[JobState, int] = field(default_factory=dict[JobState, int])


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker as its last heartbeat described it (``Queue.workers``)."""

    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_at: float
    last_seen_at: float = 0.0
    running: int = 0
    processed: int = 0
    # The job names it has handlers for: a job of one of these names is not unknown, however
    # long it waits, while this worker lives (see :mod:`conveyor.core.unknown`).
    names: tuple[str, ...] = ()
