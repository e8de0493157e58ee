"""The driver contract: the only way Conveyor talks to storage.

Every method is one atomic step. ``now`` is epoch seconds; ``None`` means the backend's own clock,
which is what production uses so that clock skew between workers cannot cause false rescues.
Results are values (see ``TransitionStatus``); exceptions mean the infrastructure failed
(:class:`conveyor.BackendUnavailable`, :class:`conveyor.MigrationRequired`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

from conveyor.drivers.records import (
    ChangeResult,
    CronFire,
    CronFireResult,
    CronInfo,
    CronSchedule,
    ExtendResult,
    FetchParams,
    FinishJob,
    InsertResult,
    JobRecord,
    JobState,
    Lease,
    ListParams,
    NewJob,
    ProgressUpdate,
    PurgeParams,
    QueueInfo,
    QueueStats,
    RateLimit,
    RescueJob,
    Retention,
    TransitionResult,
    WorkerInfo,
)


class Capability(enum.StrEnum):
    """What a backend can do beyond the contract every driver fulfils."""

    # Other processes (workers, producers, the CLI) see the same jobs.
    SHARED_ACROSS_PROCESSES = "shared_across_processes"
    # ``listen`` also wakes on jobs that other processes made runnable.
    LISTEN_ACROSS_PROCESSES = "listen_across_processes"
    # ``job_fetch`` leases only the job names ``FetchParams.names`` lists: a job no worker can
    # run waits in its queue for one that can, instead of being handed out and back.
    FETCH_BY_NAME = "fetch_by_name"
    # ``cancel_listen`` returns as soon as a job the worker runs is cancelled, from any process
    # (without it, a worker learns of cancels when it renews its leases).
    CANCEL_NOTIFY = "cancel_notify"
    # A worker of short jobs gains by leasing some ahead of a free slot, hiding the fetch's
    # round trip behind the jobs that run (``WorkerConfig.prefetch="auto"``). Measured on the
    # no-op drain: Redis gains; PostgreSQL does not (its server's work per job is the bound);
    # on SQLite a bigger fetch holds the file's one write lock longer, and producers wait.
    LEASE_AHEAD = "lease_ahead"


class Driver(Protocol):
    """A connection to one backend store; not shared between threads (see ``connect_another``)."""

    url: str  # for messages and logs: credentials hidden
    source_url: str  # the URL it was made from, credentials included: to connect from elsewhere
    capabilities: frozenset[Capability]
    # Exceptions of the backend's client library that mean "the backend failed" rather than
    # "the caller or Conveyor is wrong"; the engine reports them as BackendUnavailable.
    infrastructure_errors: tuple[type[Exception], ...]

    async def open(self, *, create: bool = True) -> None:
        """Connect, creating or migrating the schema where the backend does so automatically.

        With ``create=False`` (inspection commands), nothing is created: a store that does not
        exist yet raises :class:`conveyor.BackendUnavailable` saying where it was looked for."""
        ...

    async def close(self) -> None: ...

    def connect_another(self) -> Driver:
        """A new, unopened driver on its own connection to the same store (for other threads)."""
        ...

    async def migrate(self) -> list[str]:
        """Apply pending schema migrations; return the names applied."""
        ...

    async def setup_warnings(self) -> list[str]:
        """What about the backend's configuration puts jobs at risk (a worker logs these when it
        starts); empty when all is well or the backend cannot tell."""
        ...

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        """Insert jobs; an id that already exists is left untouched and reported as duplicate.
        Every queue named in the batch becomes known (listed), duplicates or not. A batch with a
        job whose numbers are out of range raises ``InvalidArgument`` and writes nothing.

        A job with ``dedup`` is first checked against its key's holder in its queue, by
        :func:`conveyor.drivers.common.dedup_decision`: while the key is held the result is the
        holder's (``DUPLICATE``, or ``REPLACED`` with its payload and run time replaced); when it
        is free the job is inserted (unless its id exists) and takes the key. The jobs of a batch
        act as if inserted one after another; a deleted job's key is freed with it.

        A job with ``group`` joins that group of its queue (created on first use), whose limits
        become the job's (see :mod:`conveyor.drivers.groups`); ``JobRecord.group`` is its key."""
        ...

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        """Lease up to ``limit`` runnable jobs: lowest priority first, then oldest run time, then
        enqueue order; skips paused queues (and, with ``Capability.FETCH_BY_NAME``, names not in
        ``params.names``); each gets a new lease token and ``attempt + 1``, and is no longer
        ``isolated``. None if ``limit <= 0``.

        With ``wait`` > 0, first wait for work as ``listen`` does (at most ``wait`` seconds, at
        once after a notification since the previous wait): what an idle worker does. A backend
        may do both in one round trip; if the caller gives up (is cancelled) meanwhile, whatever
        got leased is given back.

        First, every due ``scheduled``/``retrying`` job of the served, unpaused queues becomes
        ``queued`` (beyond ``limit`` too), so a backend can keep queued jobs indexed in run order
        and never scan jobs scheduled for later.

        Grouped jobs (``NewJob.group``) are served by group, as :mod:`conveyor.drivers.groups`
        describes: eligible groups in turn order, one job per group per round, never more of a
        group active than its concurrency nor started than its rate allows; each group served
        takes its turn at ``now`` (or, when its rate window is full, at the instant it frees).
        :func:`~conveyor.drivers.groups.split_limit` shares ``limit`` between grouped and plain
        jobs. A queue's ``RateLimit`` counts grouped starts too. With ``Capability.FETCH_BY_NAME``
        groups of names not in ``params.names`` are passed over (their jobs wait for a worker
        that knows them). Every path that makes a grouped job queued (insert, promotion, retry,
        rescue, a hand-back) puts it in its group, every path that takes it out of ``active``
        frees its place under the group's concurrency, and a group that becomes eligible that
        way wakes listeners as an insert does. Grouped jobs are listed and counted like any."""
        ...

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        """Extend each lease still held with its token to ``now + lease_seconds``; a lease with
        ``isolated`` also marks its job as running alone. Reports the leases lost and the jobs
        someone asked to cancel."""
        ...

    async def job_finish_many(
        self,
        finishes: Sequence[FinishJob],
        *,
        retention: Retention,
        now: float | None = None,
    ) -> list[TransitionResult]:
        """Apply completions and failures, each fenced by its lease token (see
        :mod:`conveyor.drivers.common` for the two rules checked in the write: cancel wins, and
        a repeated finish reports ``ok``). Retry and snooze run again ``delay`` seconds after
        the backend's now. An ``error`` becomes the job's last error and joins its history;
        completing clears the last error. Completing applies the count-based retention of the
        job's queue in the same step.

        A batch with an invalid finish raises ``InvalidArgument`` naming the job, and nothing of
        it is applied."""
        ...

    async def job_expired(self, *, limit: int, now: float | None = None) -> list[JobRecord]:
        """Active jobs whose lease ran out by ``now``, earliest deadline first, at most
        ``limit`` (none if ``limit <= 0``): what the rescuer decides about."""
        ...

    async def job_rescue_many(
        self, rescues: Sequence[RescueJob], *, now: float | None = None
    ) -> list[TransitionResult]:
        """Apply the rescuer's decisions, each only if its job is still active with the token
        the rescuer saw and its lease still expired (else ``lease_lost``). A requeued job goes
        back to ``queued`` at ``now`` with its attempt given back and no lease token; every
        rescue sets ``stalls``, the error and a history entry. Cancel wins over a requeue."""
        ...

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        """Move due ``scheduled``/``retrying`` jobs to ``queued`` (at most ``limit``, none if
        ``limit <= 0``); returns how many moved."""
        ...

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        """Waiting jobs become ``cancelled``; active ones get ``cancel_requested`` (and, with
        ``Capability.CANCEL_NOTIFY``, their worker's ``cancel_listen`` returns them)."""
        ...

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        """``failed``/``cancelled`` jobs go back to ``queued`` with one more attempt allowed and
        no pending cancel request."""
        ...

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int: ...

    async def job_delete_many(self, ids: Sequence[str]) -> list[ChangeResult]:
        """Delete finished (completed, failed or cancelled) jobs, with everything they left in
        other structures (dedup keys, indexes), as pruning does. A waiting or active job is
        ``WRONG_STATE`` (with its state) and left alone; an unknown id is ``NOT_FOUND``."""
        ...

    async def stats_add(self, samples: Sequence[QueueStats], *, now: float | None = None) -> None:
        """Add each sample's counts to its (queue, minute) bucket, creating it. Buckets older
        than ``STATS_KEEP_MINUTES`` before ``now`` go, with bounded work per call."""
        ...

    async def stats_read(
        self, queues: Sequence[str] | None, *, since_minute: int
    ) -> list[QueueStats]:
        """The buckets of ``queues`` (None: every queue) from ``since_minute`` on, sorted by
        queue then minute; at most ``STATS_KEEP_MINUTES`` per queue."""
        ...

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        """Delete finished jobs beyond the retention policy, at most ``limit`` per call (none if
        ``limit <= 0``): first the jobs whose own retention expired by ``now``
        (``JobRecord.expires_at``, earliest first), then those the queues' ``retention``
        removes. Within the same ``limit``, it also deletes the records of groups left with no
        queued or active job whose rate window and block have passed."""
        ...

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]: ...

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        """Matching jobs, newest (highest ``seq``) first, at most ``limit`` (none if
        ``limit <= 0``). Costs about ``limit`` reads plus a logarithm of the store's size per
        queue and state asked for, however many jobs there are (a ``name`` filter excepted: it
        reads past the jobs of other names)."""
        ...

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]: ...

    async def queue_list(self) -> list[QueueInfo]: ...

    async def queue_pause(self, queue: str) -> None: ...

    async def queue_resume(self, queue: str) -> None: ...

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        """Register or refresh a worker until ``now + ttl``; expired registrations are removed
        on the way."""
        ...

    async def worker_deregister(self, worker_id: str) -> None: ...

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        """Workers whose last heartbeat has not expired."""
        ...

    async def route_register(self, routes: Mapping[str, str]) -> None:
        """Remember the queue each job name is served from (job name -> queue), as workers
        declare them: what ``enqueue_by_name`` uses when the caller names no queue."""
        ...

    async def route_list(self) -> dict[str, str]:
        """Every job name -> queue a worker has declared (the latest declaration wins)."""
        ...

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        """Take or renew the named leadership; true while ``holder`` holds it."""
        ...

    async def leader_release(self, name: str, holder: str) -> None: ...

    def notify(self, queue: str) -> None:
        """Wake listeners in this process after jobs were made runnable."""
        ...

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        """Return when jobs may be runnable on ``queues``, or after ``timeout`` seconds.

        A ``notify`` of one of ``queues`` since this driver's previous ``listen`` returned (or
        since it was created) makes it return at once, so a notification that lands between an
        empty fetch and the ``listen`` that follows is not lost."""
        ...

    async def cancel_listen(self, worker_id: str, timeout: float) -> list[str]:
        """With ``Capability.CANCEL_NOTIFY``: the ids of jobs of worker ``worker_id`` that were
        cancelled since the last call, waiting up to ``timeout`` seconds for one. Without it,
        waits ``timeout`` seconds and returns nothing."""
        ...

    async def cron_register(
        self, schedules: Sequence[CronSchedule], *, now: float | None = None
    ) -> dict[str, int | None]:
        """Declare schedules, as a worker that runs them does when it starts: each is inserted or
        updated by name (what its ticks recorded is kept), so ``cron_list`` shows it. Returns
        each one's latest recorded tick (None: never fired), where the worker starts from."""
        ...

    async def cron_fire(self, fire: CronFire, *, now: float | None = None) -> CronFireResult:
        """One atomic step: unless ``fire.tick`` or a later tick of the schedule is recorded
        (``already``: another worker fired it, nothing is written), record the tick and insert
        its job, whose id ``cron:<name>:<tick>`` it must have; with ``skip_if_running``, while
        the job of the last fired tick is waiting or active, record the tick as ``skipped``
        and insert nothing. Any number of workers may fire the same tick: one inserts."""
        ...

    async def cron_list(self) -> list[CronInfo]:
        """Every registered schedule, by name, with what its latest tick did."""
        ...

    async def job_progress_many(
        self, updates: Sequence[ProgressUpdate], *, now: float | None = None
    ) -> list[TransitionResult]:
        """Store each job's latest progress (fraction, message, ``now``), each fenced by its lease
        token: ``ok`` when written, ``lease_lost`` when the job is no longer active with that
        token, ``not_found``. One atomic step; a batch with an invalid update raises
        ``InvalidArgument`` naming the job, and nothing of it is written."""
        ...

    async def rate_limit_block(
        self, queue: str, seconds: float, *, now: float | None = None
    ) -> None:
        """Start no job of ``queue`` under its rate limit before ``now + seconds`` (a later
        block already recorded stands): a handler met an upstream limit. Checked by every
        fetch that applies a ``RateLimit`` of ``queue``."""
        ...

    async def rate_limit_wait(
        self, limits: Sequence[RateLimit], *, now: float | None = None
    ) -> dict[str, float]:
        """For each of these queues whose limit lets no job start at ``now``: the seconds until
        one may (the oldest logged start leaves the window, or the block ends). Queues that may
        start a job now are left out. What a worker sleeps for instead of polling."""
        ...

    async def group_block(
        self, queue: str, group: str, seconds: float, *, now: float | None = None
    ) -> None:
        """Start no job of group ``group`` of ``queue`` before ``now + seconds`` (a later block
        already recorded stands): a grouped job's handler met an upstream limit. A group that
        has no record yet gets one. Other groups and plain jobs are not held."""
        ...

    async def group_wait(
        self,
        queues: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        now: float | None = None,
    ) -> float | None:
        """The seconds until the earliest group of ``queues`` (of ``names``, when given) that
        has queued jobs and room under its concurrency, but whose turn has not come (its rate
        window is full or it is blocked), may start one; None when no group waits only for
        time. A worker whose fetch came back short sleeps no longer than this: nothing wakes it
        when a window slides. Costs a logarithm of the number of groups."""
        ...
