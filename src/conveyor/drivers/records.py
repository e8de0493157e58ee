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
    error: str | None = None


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
class FetchParams:
    queues: tuple[str, ...]
    limit: int
    worker_id: str
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: str
    token: str
    # The job's queue when the caller knows it (a worker always does): a backend that keeps
    # each queue apart (Redis Cluster) then finds the job without looking for it.
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class ExtendResult:
    lost: tuple[str, ...]  # ids whose lease is no longer held with the given token
    cancel_requested: tuple[str, ...]  # ids someone asked to cancel


class TransitionKind(enum.StrEnum):
    COMPLETE = "complete"
    RETRY = "retry"  # -> retrying at run_at
    SNOOZE = "snooze"  # -> scheduled at run_at, attempt given back
    FAIL = "fail"  # -> failed
    CANCEL = "cancel"  # -> cancelled
    REQUEUE = "requeue"  # -> queued now, attempt given back


@dataclass(frozen=True, slots=True)
class FinishJob:
    """Apply one transition to an active job, fenced by its lease token."""

    job_id: str
    token: str
    kind: TransitionKind
    result: bytes | None = None
    error: str | None = None
    run_at: float | None = None
    queue: str | None = None  # the job's queue when known, as for ``Lease``


class TransitionStatus(enum.StrEnum):
    OK = "ok"
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


@dataclass(frozen=True, slots=True)
class RescueResult:
    requeued: tuple[str, ...]
    failed: tuple[str, ...]
    cancelled: tuple[str, ...] = ()  # a cancel had been requested: they must not run again


class ChangeStatus(enum.StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"
    WRONG_STATE = "wrong_state"
    CANCEL_REQUESTED = "cancel_requested"  # active job: its worker is told to stop it


@dataclass(frozen=True, slots=True)
class ChangeResult:
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
    name: str
    paused: bool
    counts: dict[JobState, int] = field(default_factory=dict[JobState, int])


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_at: float
    last_seen_at: float = 0.0
    running: int = 0
    processed: int = 0
