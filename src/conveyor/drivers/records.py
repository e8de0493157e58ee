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
    # The latest progress a handler reported (``JobContext.progress``): a fraction from 0 to 1,
    # an optional message, and when it was written (backend clock). Kept across attempts.
    progress: float | None = None
    progress_message: str | None = None
    progress_at: float | None = None
    # The job's own retention (``NewJob.keep_completed`` / ``keep_failed``), and the instant it
    # expires, set when it finishes in a state its retention covers: pruning deletes it then.
    keep_completed: float | None = None
    keep_failed: float | None = None
    expires_at: float | None = None
    # The group the job belongs to (``NewJob.group``'s key), None for a plain job.
    group: str | None = None
    # ``NewJob.headers``, as stored.
    headers: str | None = None


@dataclass(frozen=True, slots=True)
class JobGroup:
    """The group a new job joins: its key (scoped to the job's queue) and the group's limits.

    The jobs of one group start at most ``concurrency`` at a time (0: no limit) and at most
    ``rate_count`` in any window of ``rate_per`` seconds (0: no rate), across every worker;
    the groups of a queue are served round-robin (see ``Driver.job_fetch``). Each job carries
    its group's limits, and a group's limits are those of the job placed in it last, so a
    deploy that changes them takes effect with the next job."""

    key: str
    concurrency: int = 0
    rate_count: int = 0
    rate_per: float = 0.0


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
    # Deduplicate by key as well as by id (see :class:`Dedup`); None: by id only.
    dedup: Dedup | None = None
    # The job's own retention, in seconds after it finishes: once ``completed`` (0: deleted by
    # the next prune, result included), once ``failed``. None: the queue's ``Retention``. Any
    # rule of the queue's that removes the job earlier still applies.
    keep_completed: float | None = None
    keep_failed: float | None = None
    # The group the job joins (per-key concurrency, rate and fair serving); None: a plain job.
    group: JobGroup | None = None
    # Metadata that travels with the job from producer to handler (trace context, the paths of
    # secret payload fields): a JSON object of text to text built by
    # :func:`conveyor.core.headers.encode_headers`. Drivers store it verbatim and return it on
    # every read; a debounced enqueue that replaces a waiting job replaces its headers too.
    headers: str | None = None


class DedupMode(enum.StrEnum):
    """How long a dedup key stays held by the job that took it (see ``conveyor.dedup``)."""

    UNTIL_STARTED = "until_started"  # while the job waits and has never started
    UNTIL_FINISHED = "until_finished"  # until the job is completed, failed or cancelled
    THROTTLE = "throttle"  # for ``seconds`` after the job took it
    DEBOUNCE = "debounce"  # while the job waits for its run time, never started; a new
    # enqueue then replaces its payload and run time instead of being a duplicate


@dataclass(frozen=True, slots=True)
class Dedup:
    """A new job's dedup key and mode. ``key`` is scoped to the job's queue; ``seconds`` is the
    throttle window (``THROTTLE``; 0 otherwise). The rules of when a key is held are in
    :func:`conveyor.drivers.common.dedup_decision`; a driver applies them in its insert's
    atomic step, so fetch, finish and rescue know nothing of keys."""

    mode: DedupMode
    key: str
    seconds: float = 0.0


class InsertStatus(enum.StrEnum):
    """What an enqueue did: ``INSERTED`` a new job; ``DUPLICATE``: nothing, the job with that id
    or holding that dedup key is returned; ``REPLACED``: a debounced job still waiting got the
    new payload and run time (``Debounce``)."""

    INSERTED = "inserted"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"


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


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """The latest progress of a leased job, fenced by its lease token like a finish: written only
    while the job is ``active`` with that token. ``fraction`` is from 0 to 1."""

    job_id: str
    token: str
    fraction: float
    message: str | None = None
    queue: str | None = None  # the job's queue when known, as for ``Lease``


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


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many attempts of ``queue``'s jobs ended in the minute ``minute`` (backend epoch
    seconds // 60): ``completed``, ``retried`` (failed, to be run again) and ``failed`` (failed
    for good: the job is in the dead-letter set). Workers add their counts every few seconds
    (``Driver.stats_add``); a bucket is kept for ``STATS_KEEP_MINUTES``."""

    queue: str
    minute: int
    completed: int = 0
    retried: int = 0
    failed: int = 0


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


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A schedule as a worker declares it to the backend (``cron_register``): enough to list it
    and compute its next tick without the worker's code. ``expression`` and ``tz`` are a
    :class:`conveyor.core.schedule.Timetable`'s; ``catch_up`` and ``overlap`` its policies."""

    name: str
    queue: str
    job_name: str
    expression: str
    tz: str = "UTC"
    catch_up: str = "skip"
    overlap: str = "allow"


@dataclass(frozen=True, slots=True)
class CronFire:
    """Fire tick ``tick`` (epoch seconds) of schedule ``name``: insert ``job`` (its id is
    ``cron:<name>:<tick>``, its queue the schedule's) unless the tick, or a later one, is
    recorded already. With ``skip_if_running``, a tick whose previous job has not finished
    (waiting or active) is recorded as skipped instead."""

    name: str
    tick: int
    job: NewJob
    skip_if_running: bool = False


class CronFireStatus(enum.StrEnum):
    FIRED = "fired"  # the tick is recorded and its job inserted
    SKIPPED = "skipped"  # the tick is recorded; the previous tick's job was still unfinished
    ALREADY = "already"  # this tick, or a later one, was recorded before: nothing written


@dataclass(frozen=True, slots=True)
class CronFireResult:
    status: CronFireStatus
    last_tick: int  # the latest tick recorded, after the call


@dataclass(frozen=True, slots=True)
class CronInfo:
    """A registered schedule and what its last tick did (``Queue.schedules``)."""

    schedule: CronSchedule
    registered_at: float  # when a worker last declared it
    last_tick: int | None = None  # the latest tick recorded (fired or skipped)
    last_status: CronFireStatus | None = None
    last_fired_at: float | None = None  # backend clock, when the last tick was recorded
    last_job_id: str | None = None  # the job of the last tick that fired
