"""The driver contract: the only way Conveyor talks to storage.

Every method is one atomic step. ``now`` is epoch seconds; ``None`` means the backend's own clock,
which is what production uses so that clock skew between workers cannot cause false rescues.
Results are values (see ``TransitionStatus``); exceptions mean the infrastructure failed
(:class:`conveyor.BackendUnavailable`, :class:`conveyor.MigrationRequired`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

from conveyor.drivers.records import (
    ChangeResult,
    ExtendResult,
    FetchParams,
    FinishJob,
    InsertResult,
    JobRecord,
    JobState,
    Lease,
    ListParams,
    NewJob,
    PurgeParams,
    QueueInfo,
    RescueResult,
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


class Driver(Protocol):
    """A connection to one backend store; not shared between threads (see ``connect_another``)."""

    url: str
    capabilities: frozenset[Capability]
    # Exceptions of the backend's client library that mean "the backend failed" rather than
    # "the caller or Conveyor is wrong"; the engine reports them as BackendUnavailable.
    infrastructure_errors: tuple[type[Exception], ...]

    async def open(self) -> None:
        """Connect, creating or migrating the schema where the backend does so automatically."""
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
        Every queue named in the batch becomes known (listed), duplicates or not."""
        ...

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        """Lease up to ``limit`` runnable jobs: lowest priority first, then oldest run time, then
        enqueue order; skips paused queues; each gets a new lease token and ``attempt + 1``.
        None if ``limit <= 0``.

        With ``wait`` > 0, first wait for work as ``listen`` does (at most ``wait`` seconds, at
        once after a notification since the previous wait): what an idle worker does. A backend
        may do both in one round trip; if the caller gives up (is cancelled) meanwhile, whatever
        got leased is given back.

        First, every due ``scheduled``/``retrying`` job of the served, unpaused queues becomes
        ``queued`` (beyond ``limit`` too), so a backend can keep queued jobs indexed in run order
        and never scan jobs scheduled for later."""
        ...

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult: ...

    async def job_finish_many(
        self,
        finishes: Sequence[FinishJob],
        *,
        retention: Retention,
        now: float | None = None,
    ) -> list[TransitionResult]:
        """Apply completions and failures, each fenced by its lease token. Completing applies the
        count-based retention of the job's queue in the same step.

        A job with ``cancel_requested`` that would run again (retry, snooze, requeue) becomes
        ``cancelled`` instead. A batch with an invalid transition (retry or snooze without
        ``run_at``) raises ``ValueError`` naming the job, and nothing of it is applied."""
        ...

    async def job_rescue_expired(
        self, *, max_stalls: int, limit: int, now: float | None = None
    ) -> RescueResult:
        """Active jobs whose lease expired go back to ``queued`` (stall counted, attempt given
        back), or to ``failed`` once they have stalled more than ``max_stalls`` times, or to
        ``cancelled`` when a cancel was requested. At most ``limit`` jobs, none if
        ``limit <= 0``."""
        ...

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        """Move due ``scheduled``/``retrying`` jobs to ``queued`` (at most ``limit``, none if
        ``limit <= 0``); returns how many moved."""
        ...

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        """Waiting jobs become ``cancelled``; active ones get ``cancel_requested``."""
        ...

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        """``failed``/``cancelled`` jobs go back to ``queued`` with one more attempt allowed and
        no pending cancel request."""
        ...

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int: ...

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        """Delete finished jobs beyond the retention policy, at most ``limit`` per call (none if
        ``limit <= 0``)."""
        ...

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]: ...

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        """Matching jobs, newest first, at most ``limit`` (none if ``limit <= 0``)."""
        ...

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]: ...

    async def queue_list(self) -> list[QueueInfo]: ...

    async def queue_pause(self, queue: str) -> None: ...

    async def queue_resume(self, queue: str) -> None: ...

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None: ...

    async def worker_deregister(self, worker_id: str) -> None: ...

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        """Workers whose last heartbeat has not expired."""
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
