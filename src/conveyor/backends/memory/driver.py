"""The in-memory driver: the executable specification of the driver contract.

Every operation runs under one lock, so it is trivially atomic; the other backends must behave
exactly like this one, which the conformance suite checks. It is also the engine of tests that
need no server. State lives in a :class:`MemoryStore`; drivers made with ``connect_another``
share it, as connections to one database would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Sequence

from conveyor._errors import BackendUnavailable
from conveyor.backends.memory import _cron
from conveyor.backends.memory._groups import choose
from conveyor.backends.memory._inspect import InspectOperations
from conveyor.backends.memory._registry import RegistryOperations
from conveyor.backends.memory._store import MemoryStore, store_named
from conveyor.backends.memory._transitions import (
    apply_finish,
    apply_rescue,
    expired,
    finished,
    progressed,
)
from conveyor.drivers.common import (
    CANCELLED_ERROR,
    RETRYABLE_STATES,
    check_finishes,
    check_new_jobs,
    check_now,
    check_progress,
    check_rate_limits,
    check_rate_seconds,
    check_rescues,
    finish_was_applied,
    resolve_now,
    run_order,
)
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import (
    WAITING_STATES,
    ChangeResult,
    ChangeStatus,
    CronFire,
    CronFireResult,
    CronInfo,
    CronSchedule,
    ExtendResult,
    FetchParams,
    FinishJob,
    InsertResult,
    InsertStatus,
    JobRecord,
    JobState,
    Lease,
    ListParams,
    NewJob,
    ProgressUpdate,
    PurgeParams,
    RateLimit,
    RescueJob,
    Retention,
    TransitionResult,
    TransitionStatus,
)
from conveyor.drivers.wakeup import Listener


class MemoryDriver(RegistryOperations, InspectOperations):
    capabilities: frozenset[Capability] = frozenset({Capability.FETCH_BY_NAME})
    infrastructure_errors: tuple[type[Exception], ...] = ()

    def __init__(self, url: str = "memory://", store: MemoryStore | None = None) -> None:
        self.url = url
        self.source_url = url
        self._name = url.partition("://")[2]
        self._store = store if store is not None else store_named(self._name)
        self._listener = Listener(self._store.wakeups)

    @property
    def store(self) -> MemoryStore:
        """The state this driver works on (shared with the drivers ``connect_another`` makes):
        what :mod:`conveyor.testing` reads synchronously, under its lock."""
        return self._store

    async def open(self, *, create: bool = True) -> None:
        if not create and not self._store.known_queues and not self._store.jobs:
            raise BackendUnavailable(f"{self.url} holds no jobs or queues yet")

    async def close(self) -> None:
        return None

    def connect_another(self) -> MemoryDriver:
        return MemoryDriver(self.url, self._store)

    async def migrate(self) -> list[str]:
        return []

    async def setup_warnings(self) -> list[str]:
        return []

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        check_now(now)
        check_new_jobs(jobs)
        at = resolve_now(now)
        results: list[InsertResult] = []
        s = self._store
        with s.lock:
            for new in jobs:
                s.known_queues.add(new.queue)  # enqueueing into a queue makes it known
                run_at = new.run_at if new.run_at is not None else at + new.delay
                # A held dedup key decides first (so a debounce with a fixed id replaces), then
                # the id: a job with a free key whose id exists is a duplicate of that job.
                if new.dedup is not None:
                    deduplicated = s.dedup.insert(s.jobs, new, run_at, at)
                    if deduplicated is not None:
                        if deduplicated.status is InsertStatus.REPLACED:
                            s.groups.replaced(deduplicated.id, new, at)
                        results.append(deduplicated)
                        continue
                existing = s.jobs.get(new.id)
                if existing is not None:
                    results.append(InsertResult(new.id, InsertStatus.DUPLICATE, existing.state))
                    continue
                if new.dedup is not None:
                    s.dedup.take(new, at)
                state = JobState.SCHEDULED if run_at > at else JobState.QUEUED
                s.jobs[new.id] = JobRecord(
                    id=new.id,
                    queue=new.queue,
                    name=new.name,
                    payload=new.payload,
                    state=state,
                    priority=new.priority,
                    attempt=0,
                    max_attempts=new.max_attempts,
                    run_at=run_at,
                    enqueued_at=at,
                    seq=next(s.seq),
                    keep_completed=new.keep_completed,
                    keep_failed=new.keep_failed,
                    group=None if new.group is None else new.group.key,
                    headers=new.headers,
                )
                if new.group is not None:
                    s.groups.joined(new.id, new.queue, new.name, new.group, at)
                results.append(InsertResult(new.id, InsertStatus.INSERTED, state))
        for queue in {j.queue for j in jobs}:
            self.notify(queue)
        return results

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        if wait > 0:
            await self.listen(params.queues, wait)
        return await self._fetch_now(params, now)

    async def _fetch_now(self, params: FetchParams, now: float | None) -> list[JobRecord]:
        check_now(now)
        check_rate_limits(params.rate_limits)
        limits = [limit for limit in params.rate_limits if limit.queue in params.queues]
        at = resolve_now(now)
        s = self._store
        if params.limit <= 0:
            return []
        names = None if params.names is None else set(params.names)
        unknown_before = (
            float("-inf") if params.unknown_after is None else at - params.unknown_after
        )
        with s.lock:
            served = [
                job
                for job in s.jobs.values()
                if job.queue in params.queues and job.queue not in s.paused
            ]
            # Due scheduled and retrying jobs of the served queues become queued first, so a
            # fetch only ever takes queued jobs (what lets an index stay in run order).
            for job in served:
                if job.state in (JobState.SCHEDULED, JobState.RETRYING) and job.run_at <= at:
                    s.jobs[job.id] = dataclasses.replace(job, state=JobState.QUEUED)
            known = [
                s.jobs[job.id]
                for job in served
                if names is None or job.name in names or job.run_at <= unknown_before
            ]
            plain = sorted(
                (j for j in known if j.state is JobState.QUEUED and j.group is None),
                key=run_order,
            )
            # Groups of names the caller cannot run are passed over however long they wait.
            queued, active = s.groups.waiting((s.jobs[j.id] for j in served), at, names)
            caps = s.rates.caps(limits, at)
            coin = random.getrandbits(1) == 1
            chosen = choose(s.groups, queued, active, plain, caps, params.limit, at, coin)
            leased: list[JobRecord] = []
            for job in chosen:
                updated = dataclasses.replace(
                    job,
                    state=JobState.ACTIVE,
                    attempt=job.attempt + 1,
                    started_at=at,
                    lease_token=uuid.uuid4().hex,
                    lease_expires_at=at + params.lease_seconds,
                    worker_id=params.worker_id,
                    cancel_requested=False,
                    isolated=False,
                )
                s.jobs[job.id] = updated
                leased.append(updated)
            s.rates.record(limits, leased, at)
            return leased

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        check_now(now)
        at = resolve_now(now)
        lost: list[str] = []
        cancel: list[str] = []
        s = self._store
        with s.lock:
            for lease in leases:
                job = s.jobs.get(lease.job_id)
                if job is None or job.state != JobState.ACTIVE or job.lease_token != lease.token:
                    lost.append(lease.job_id)
                    continue
                s.jobs[job.id] = dataclasses.replace(
                    job,
                    lease_expires_at=at + lease_seconds,
                    isolated=job.isolated or lease.isolated,
                )
                if job.cancel_requested:
                    cancel.append(job.id)
        return ExtendResult(tuple(lost), tuple(cancel))

    async def job_finish_many(
        self,
        finishes: Sequence[FinishJob],
        *,
        retention: Retention,
        now: float | None = None,
    ) -> list[TransitionResult]:
        check_now(now)
        check_finishes(finishes)
        at = resolve_now(now)
        results: list[TransitionResult] = []
        completed_queues: set[str] = set()
        woken: set[str] = set()
        s = self._store
        with s.lock:
            for finish in finishes:
                job = s.jobs.get(finish.job_id)
                if job is None:
                    results.append(TransitionResult(finish.job_id, TransitionStatus.NOT_FOUND))
                    continue
                if finish_was_applied(job, finish.token):
                    results.append(TransitionResult(finish.job_id, TransitionStatus.OK))
                    continue
                if job.state != JobState.ACTIVE or job.lease_token != finish.token:
                    results.append(TransitionResult(finish.job_id, TransitionStatus.LEASE_LOST))
                    continue
                updated = apply_finish(job, finish, at)
                s.jobs[job.id] = updated
                if updated.state is JobState.COMPLETED:
                    completed_queues.add(job.queue)
                if updated.state is JobState.QUEUED or job.group is not None:
                    woken.add(job.queue)  # a grouped job leaving frees its group's place
                results.append(TransitionResult(finish.job_id, TransitionStatus.OK))
            if retention.completed_max_count is not None:
                for queue in completed_queues:
                    self._trim_completed(queue, retention.completed_max_count)
        for queue in woken:
            self.notify(queue)
        return results

    def _trim_completed(self, queue: str, keep: int, limit: int | None = None) -> int:
        """Delete completed jobs of ``queue`` beyond the newest ``keep``, oldest first, at most
        ``limit`` of them (prune is bounded per call; completion trims all)."""
        s = self._store
        done = [j for j in s.jobs.values() if j.queue == queue and j.state == JobState.COMPLETED]
        if len(done) <= keep:
            return 0
        done.sort(key=lambda j: (j.finished_at or 0.0, j.seq))
        excess = done[: len(done) - keep]
        if limit is not None:
            excess = excess[: max(limit, 0)]
        for job in excess:
            s.delete(job.id)
        return len(excess)

    async def job_expired(self, *, limit: int, now: float | None = None) -> list[JobRecord]:
        check_now(now)
        at = resolve_now(now)
        with self._store.lock:
            return sorted(
                (
                    j
                    for j in self._store.jobs.values()
                    if j.state == JobState.ACTIVE
                    and j.lease_expires_at is not None
                    and j.lease_expires_at <= at
                ),
                key=lambda j: (j.lease_expires_at, j.seq),
            )[: max(limit, 0)]

    async def job_rescue_many(
        self, rescues: Sequence[RescueJob], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_rescues(rescues)
        at = resolve_now(now)
        results: list[TransitionResult] = []
        woken: set[str] = set()
        s = self._store
        with s.lock:
            for rescue in rescues:
                job = s.jobs.get(rescue.job_id)
                if job is None:
                    results.append(TransitionResult(rescue.job_id, TransitionStatus.NOT_FOUND))
                    continue
                if (
                    job.state != JobState.ACTIVE
                    or job.lease_token != rescue.token
                    or job.lease_expires_at is None
                    or job.lease_expires_at > at
                ):
                    results.append(TransitionResult(rescue.job_id, TransitionStatus.LEASE_LOST))
                    continue
                s.jobs[job.id] = apply_rescue(job, rescue, at)
                if s.jobs[job.id].state is JobState.QUEUED or job.group is not None:
                    woken.add(job.queue)
                results.append(TransitionResult(rescue.job_id, TransitionStatus.OK))
        for queue in woken:
            self.notify(queue)
        return results

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        at = resolve_now(now)
        s = self._store
        with s.lock:
            due = sorted(
                (
                    j
                    for j in s.jobs.values()
                    if j.state in (JobState.SCHEDULED, JobState.RETRYING) and j.run_at <= at
                ),
                key=lambda j: (j.run_at, j.seq),
            )[: max(limit, 0)]
            for job in due:
                s.jobs[job.id] = dataclasses.replace(job, state=JobState.QUEUED)
        for queue in {j.queue for j in due}:
            self.notify(queue)
        return len(due)

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        at = resolve_now(now)
        results: list[ChangeResult] = []
        s = self._store
        with s.lock:
            for job_id in ids:
                job = s.jobs.get(job_id)
                if job is None:
                    results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
                elif job.state in WAITING_STATES:
                    # An operator's cancel ends the job; it is no attempt's error (no history).
                    s.jobs[job_id] = dataclasses.replace(
                        finished(job, JobState.CANCELLED, at, keep_token=True),
                        error=CANCELLED_ERROR,
                    )
                    results.append(ChangeResult(job_id, ChangeStatus.OK, JobState.CANCELLED))
                elif job.state == JobState.ACTIVE:
                    s.jobs[job_id] = dataclasses.replace(job, cancel_requested=True)
                    results.append(
                        ChangeResult(job_id, ChangeStatus.CANCEL_REQUESTED, JobState.ACTIVE)
                    )
                else:
                    results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, job.state))
        return results

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        at = resolve_now(now)
        results: list[ChangeResult] = []
        woken: set[str] = set()
        s = self._store
        with s.lock:
            for job_id in ids:
                job = s.jobs.get(job_id)
                if job is None:
                    results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
                elif job.state in RETRYABLE_STATES:
                    s.jobs[job_id] = dataclasses.replace(
                        job,
                        state=JobState.QUEUED,
                        max_attempts=job.attempt + 1,
                        run_at=at,
                        finished_at=None,
                        expires_at=None,
                        stalls=0,
                        cancel_requested=False,
                        seq=next(s.seq),
                    )
                    woken.add(job.queue)
                    results.append(ChangeResult(job_id, ChangeStatus.OK, JobState.QUEUED))
                else:
                    results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, job.state))
        for queue in woken:
            self.notify(queue)
        return results

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int:
        s = self._store
        with s.lock:
            doomed = [
                j.id
                for j in s.jobs.values()
                if j.state in params.states
                and (params.queue is None or j.queue == params.queue)
                and (
                    params.finished_before is None
                    or (j.finished_at is not None and j.finished_at < params.finished_before)
                )
            ]
            for job_id in doomed:
                s.delete(job_id)
        return len(doomed)

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        at = resolve_now(now)
        s = self._store
        ages = {
            JobState.COMPLETED: retention.completed_max_age,
            JobState.FAILED: retention.failed_max_age,
            JobState.CANCELLED: retention.cancelled_max_age,
        }
        if limit <= 0:
            return 0
        removed = 0
        with s.lock:
            for job in expired(s.jobs.values(), at, limit):
                s.delete(job.id)  # with the dedup record it holds
                removed += 1
            for state, max_age in ages.items():
                if max_age is None or removed >= limit:
                    continue
                old = sorted(
                    (
                        j
                        for j in s.jobs.values()
                        if j.state == state
                        and j.finished_at is not None
                        and j.finished_at < at - max_age
                    ),
                    key=lambda j: (j.finished_at or 0.0, j.seq),
                )[: limit - removed]
                for job in old:
                    s.delete(job.id)
                removed += len(old)
            if retention.completed_max_count is not None:
                for queue in sorted(s.known_queues):
                    if removed >= limit:
                        break
                    removed += self._trim_completed(
                        queue, retention.completed_max_count, limit - removed
                    )
            # Group records have a budget of their own: finished jobs never crowd them out.
            s.groups.prune(s.jobs.values(), at, limit)
        return removed

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]:
        with self._store.lock:
            return [self._store.jobs.get(job_id) for job_id in ids]

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        with self._store.lock:
            matching = [
                j
                for j in self._store.jobs.values()
                if (params.queue is None or j.queue == params.queue)
                and (not params.states or j.state in params.states)
                and (params.name is None or j.name == params.name)
                and (params.before_seq is None or j.seq < params.before_seq)
            ]
        matching.sort(key=lambda j: j.seq, reverse=True)
        return matching[: max(params.limit, 0)]

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        with self._store.lock:
            for job in self._store.jobs.values():
                if queue is None or job.queue == queue:
                    counts[job.state] += 1
        return counts

    def notify(self, queue: str) -> None:
        self._store.wakeups.notify(queue)

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        await self._listener.listen(queues, timeout)

    async def cancel_listen(self, worker_id: str, timeout: float) -> list[str]:
        await asyncio.sleep(timeout)  # no notifications: cancels arrive with lease renewals
        return []

    async def cron_register(
        self, schedules: Sequence[CronSchedule], *, now: float | None = None
    ) -> dict[str, int | None]:
        with self._store.lock:
            return _cron.register(self._store.crons, schedules, now)

    async def cron_fire(self, fire: CronFire, *, now: float | None = None) -> CronFireResult:
        s = self._store
        with s.lock:
            return await _cron.fire(
                s.crons, s.jobs, fire, now, lambda jobs, at: self.job_insert_many(jobs, now=at)
            )

    async def cron_list(self) -> list[CronInfo]:
        with self._store.lock:
            return _cron.listing(self._store.crons)

    async def job_progress_many(
        self, updates: Sequence[ProgressUpdate], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_progress(updates)
        at = resolve_now(now)
        results: list[TransitionResult] = []
        with self._store.lock:
            for update in updates:
                job = self._store.jobs.get(update.job_id)
                if job is None:
                    status = TransitionStatus.NOT_FOUND
                elif job.state is not JobState.ACTIVE or job.lease_token != update.token:
                    status = TransitionStatus.LEASE_LOST
                else:
                    self._store.jobs[job.id] = progressed(job, update, at)
                    status = TransitionStatus.OK
                results.append(TransitionResult(update.job_id, status))
        return results

    async def rate_limit_block(
        self, queue: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_rate_seconds(seconds, f"block of queue {queue!r}")
        at = resolve_now(now)
        with self._store.lock:
            self._store.rates.block(queue, at + seconds)

    async def rate_limit_wait(
        self, limits: Sequence[RateLimit], *, now: float | None = None
    ) -> dict[str, float]:
        check_now(now)
        check_rate_limits(limits)
        at = resolve_now(now)
        with self._store.lock:
            return self._store.rates.waits(limits, at)

    async def group_block(
        self, queue: str, group: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_rate_seconds(seconds, f"block of group {group!r}")
        at = resolve_now(now)
        with self._store.lock:
            self._store.groups.block(queue, group, at + seconds, at)

    async def group_wait(
        self,
        queues: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        now: float | None = None,
    ) -> float | None:
        check_now(now)
        at = resolve_now(now)
        s = self._store
        with s.lock:
            served = [j for j in s.jobs.values() if j.queue not in s.paused]
            return s.groups.wait(served, queues, names, at)


__all__ = ["MemoryDriver", "MemoryStore"]
