"""The SQLite driver: the embedded default backend, for one host and any number of processes.

Each operation is one transaction on the driver's own connection (see :mod:`._connection`), so it
is atomic across processes sharing the file. It behaves exactly like the memory driver, the
executable specification; the conformance suite and a model-based test check that. ``now=None``
means this host's clock (``time.time()``), which every process on the host shares.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
import sqlite3
from collections.abc import Sequence
from functools import partial

from conveyor._errors import BackendUnavailable
from conveyor.backends.sqlite import _cron
from conveyor.backends.sqlite import _finish as finish
from conveyor.backends.sqlite import _groups as groups
from conveyor.backends.sqlite import _rates as rates
from conveyor.backends.sqlite._connection import (
    Connection,
    in_short_waits,
    migrate,
    vacuum_step,
    vacuum_surplus,
)
from conveyor.backends.sqlite._fetch import extend_leases, fetch
from conveyor.backends.sqlite._inline import InlineInserter, ThreadInserter
from conveyor.backends.sqlite._insert import (
    can_insert_alone,
    insert_alone,
    on_connection,
    write_all,
)
from conveyor.backends.sqlite._inspect import InspectOperations
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.backends.sqlite._statements import (
    data_version,
    note_error,
    progress_many,
    record_of,
    reserve_seq,
    rows_of,
    state_of,
)
from conveyor.backends.sqlite._url import path_from_url, synchronous_from_url
from conveyor.backends.sqlite._wakeup import POLL_MAX_SECONDS, POLL_MIN_SECONDS, wakeups_for
from conveyor.backends.sqlite._workers import RegistryOperations
from conveyor.drivers.blocking import BlockingInserter
from conveyor.drivers.common import (
    LOST_WHILE_CANCELLING,
    RETRYABLE_STATES,
    cancel_wins,
    cancelled_error,
    check_cron_fire,
    check_cron_schedules,
    check_finishes,
    check_new_jobs,
    check_now,
    check_progress,
    check_rate_limits,
    check_rescues,
    resolve_now,
)
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import (
    WAITING_STATES,
    ChangeResult,
    ChangeStatus,
    CronFire,
    CronFireResult,
    CronFireStatus,
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
    RescueJob,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
)
from conveyor.drivers.transactional import Dialect, Plan
from conveyor.drivers.wakeup import Listener

# Rows a maintenance step (promote, prune) changes per write transaction.
MAINTENANCE_CHUNK = 200
# Rescues (two to four statements each) per write transaction.
RESCUE_CHUNK = 32


class SQLiteDriver(
    rates.RateLimitOperations, groups.GroupOperations, RegistryOperations, InspectOperations
):
    """A connection to one SQLite file. Not shared between threads: use :meth:`connect_another`."""

    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.SHARED_ACROSS_PROCESSES,
            Capability.LISTEN_ACROSS_PROCESSES,
            Capability.FETCH_BY_NAME,
        }
    )
    # sqlite3 errors are mapped where they happen, with the file's name; what is left is the
    # operating system failing under it.
    infrastructure_errors: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, url: str) -> None:
        self.url = url
        self.source_url = url
        self.path = path_from_url(url)
        self._db = Connection(self.path, synchronous=synchronous_from_url(url))
        self._listener = Listener(wakeups_for(self.path))
        self._unreported: list[str] = []
        self._data_version = 0
        self._poll = POLL_MIN_SECONDS
        # Queues whose row this driver's own commits made sure of: a single enqueue into one of
        # them is one statement (queue rows are never deleted). Shared with blocking inserters.
        self.known_queues: set[str] = set()
        self._inline = InlineInserter(self.path, self._db.synchronous)

    def __repr__(self) -> str:
        return f"SQLiteDriver({self.url!r})"

    async def open(self, *, create: bool = True) -> None:
        if self._db.is_open:
            return
        if not create:
            _refuse_missing(self.path, self.url)
        self._unreported = await self._db.open()
        self._data_version = await self._db.run(data_version)

    async def close(self) -> None:
        self._inline.close()
        await self._db.close()

    def connect_another(self) -> SQLiteDriver:
        return SQLiteDriver(self.url)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied, including any ``open()`` applied
        since the last call (``open()`` migrates first, and the caller still wants to know)."""
        if not self._db.is_open:
            await self.open()
        applied = self._unreported + await self._db.run(lambda conn: migrate(conn, self.path))
        self._unreported = []
        return applied

    async def setup_warnings(self) -> list[str]:
        return []

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        check_now(now)
        check_new_jobs(jobs)
        at = resolve_now(now)
        if not jobs:
            return []
        if can_insert_alone(jobs, self.known_queues):
            # On this thread when that costs no wait; a closed driver writes nothing here.
            inline = self._inline.insert(jobs[0], at) if self._db.is_open else None
            alone: InsertResult | None = None
            if isinstance(inline, InsertResult):
                alone = inline
                await asyncio.sleep(0)  # an await that wrote lets other tasks run, as any does
            elif inline is None:
                alone = await self._db.run(
                    lambda conn: in_short_waits(conn, lambda c: insert_alone(c, jobs[0], at))
                )
            if alone is not None:
                self.notify(jobs[0].queue)
                return [alone]
        results = await self._db.write(lambda conn: write_all(conn, jobs, at))
        self.registered(jobs)
        return results

    def registered(self, jobs: Sequence[NewJob]) -> None:
        """After a committed insert of ``jobs``: their queues are registered for good (a later
        single insert into one is one statement), and this process's workers are woken."""
        for queue in {job.queue for job in jobs}:
            self.known_queues.add(queue)
            self.notify(queue)  # thread-safe: wakes this process's workers at once

    def blocking_inserter(self) -> BlockingInserter:
        """:meth:`job_insert_many` from the caller's thread, on a connection of its own."""
        return ThreadInserter(Connection(self.path, synchronous=self._db.synchronous), self)

    # -- TransactionalWriter: the same insert on the caller's own connection ---------------------

    @property
    def dialect(self) -> Dialect:
        return "sqlite"

    def insert_plan(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Plan[list[InsertResult]]:
        """The statements of :meth:`job_insert_many`, for a sqlite3 connection of the caller's
        to run inside its own transaction; the first one checks that the connection is on this
        queue's file. ``now=None`` is this host's clock. The caller's commit notifies nobody:
        workers see the jobs when they next poll the file (every 50 ms at most while idle)."""
        check_now(now)
        check_new_jobs(jobs)
        return on_connection(list(jobs), resolve_now(now), self.path)

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        if wait > 0:
            await self.listen(params.queues, wait)
        return await self._fetch_now(params, now)

    async def _fetch_now(self, params: FetchParams, now: float | None) -> list[JobRecord]:
        check_now(now)
        check_rate_limits(params.rate_limits)
        if not params.queues or params.limit <= 0:
            return []
        limits = [limit for limit in params.rate_limits if limit.queue in params.queues]
        rows = await self._db.run(lambda conn: fetch(conn, params, limits, now))
        return [record_of(row) for row in rows]

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        check_now(now)
        at = resolve_now(now)
        if not leases:
            return ExtendResult((), ())

        # One statement under the write lock, the outcome read after the commit (see
        # extend_leases); one executor call.
        return await self._db.run(lambda conn: extend_leases(conn, leases, at + lease_seconds))

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
        if not finishes:
            return []
        # One short transaction per chunk: between two, producers (and other workers) take the
        # write lock (see _finish); all in one executor call.
        written = await self._db.run(lambda conn: finish.finish_many(conn, finishes, retention, at))
        for queue in written.woken:
            self.notify(queue)
        return [written.results[i] for i in range(len(finishes))]

    async def job_expired(self, *, limit: int, now: float | None = None) -> list[JobRecord]:
        check_now(now)
        at = resolve_now(now)
        if limit <= 0:
            return []
        rows = await self._db.run(
            lambda conn: rows_of(conn, "job_expired", {"now": at, "limit": limit})
        )
        return [record_of(row) for row in rows]

    async def job_rescue_many(
        self, rescues: Sequence[RescueJob], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_rescues(rescues)
        at = resolve_now(now)
        if not rescues:
            return []

        def step(
            conn: sqlite3.Connection, rescues: Sequence[RescueJob]
        ) -> tuple[list[TransitionResult], set[str]]:
            results: list[TransitionResult] = []
            queues: set[str] = set()
            for rescue in rescues:
                fence = {"id": rescue.job_id, "token": rescue.token, "now": at}
                held = rows_of(conn, "job_rescue_many__fence", fence)
                if not held:
                    status = TransitionStatus.LEASE_LOST
                    if state_of(conn, rescue.job_id) is None:
                        status = TransitionStatus.NOT_FOUND
                    results.append(TransitionResult(rescue.job_id, status))
                    continue
                kind, error = rescue.kind, rescue.error
                if cancel_wins(kind, bool(held[0]["cancel_requested"])):
                    kind, error = TransitionKind.CANCEL, cancelled_error(LOST_WHILE_CANCELLING)
                note_error(conn, fence, error)
                args = {**fence, "stalls": rescue.stalls, "error": error}
                if kind is TransitionKind.REQUEUE:
                    rows = rows_of(conn, "job_rescue_many__requeue", args)
                    queues.update(row["queue"] for row in rows)
                else:
                    state = JobState.FAILED if kind is TransitionKind.FAIL else JobState.CANCELLED
                    rows = rows_of(conn, "job_rescue_many__end", {**args, "state": state.value})
                    queues.update(row["queue"] for row in rows if groups.freed(conn, row, at))
                results.append(TransitionResult(rescue.job_id, TransitionStatus.OK))
            return results, queues

        # Each rescue is a few statements: a transaction takes RESCUE_CHUNK of them, so after
        # a crash that lost many jobs producers still get the lock in between.
        results: list[TransitionResult] = []
        queues: set[str] = set()
        for first in range(0, len(rescues), RESCUE_CHUNK):
            chunk = rescues[first : first + RESCUE_CHUNK]
            done, woken = await self._db.write(partial(step, rescues=chunk), kind="rescue")
            results += done
            queues |= woken
        for queue in queues:
            self.notify(queue)
        return results

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        at = resolve_now(now)
        if limit <= 0:
            return 0
        promoted = 0
        queues: set[str] = set()
        while promoted < limit:  # in chunks, each its own transaction: producers get in between
            args: dict[str, float] = {"now": at, "limit": min(limit - promoted, MAINTENANCE_CHUNK)}
            rows = await self._db.write(
                partial(rows_of, query="job_promote_due", args=args), kind="promote"
            )
            promoted += len(rows)
            queues.update(row["queue"] for row in rows)
            if len(rows) < args["limit"]:
                break
        for queue in queues:
            self.notify(queue)
        return promoted

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        at = resolve_now(now)

        def step(conn: sqlite3.Connection) -> list[ChangeResult]:
            results: list[ChangeResult] = []
            for job_id in ids:
                state = state_of(conn, job_id)
                if state is None:
                    results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
                elif state in WAITING_STATES:
                    conn.execute(Q["job_cancel_many__waiting"], {"id": job_id, "now": at})
                    results.append(ChangeResult(job_id, ChangeStatus.OK, JobState.CANCELLED))
                elif state is JobState.ACTIVE:
                    conn.execute(Q["job_cancel_many__active"], {"id": job_id})
                    results.append(
                        ChangeResult(job_id, ChangeStatus.CANCEL_REQUESTED, JobState.ACTIVE)
                    )
                else:
                    results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, state))
            return results

        return await self._db.write(step) if ids else []

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        at = resolve_now(now)
        if not ids:
            return []

        def step(conn: sqlite3.Connection) -> tuple[list[ChangeResult], set[str]]:
            seq = reserve_seq(conn, len(ids))
            results: list[ChangeResult] = []
            queues: set[str] = set()
            for job_id in ids:
                state = state_of(conn, job_id)
                if state is None:
                    results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
                elif state in RETRYABLE_STATES:
                    seq += 1
                    rows = rows_of(conn, "job_retry_many", {"id": job_id, "now": at, "seq": seq})
                    queues.add(rows[0]["queue"])
                    results.append(ChangeResult(job_id, ChangeStatus.OK, JobState.QUEUED))
                else:
                    results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, state))
            return results, queues

        results, queues = await self._db.write(step)
        for queue in queues:
            self.notify(queue)
        return results

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int:
        if not params.states:
            return 0
        args = {
            "states": json.dumps([state.value for state in params.states]),
            "queue": params.queue,
            "finished_before": params.finished_before,
        }
        return await self._db.write(lambda conn: conn.execute(Q["job_purge"], args).rowcount)

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        at = resolve_now(now)
        if limit <= 0:
            return 0
        ages = (
            (JobState.COMPLETED, retention.completed_max_age),
            (JobState.FAILED, retention.failed_max_age),
            (JobState.CANCELLED, retention.cancelled_max_age),
        )

        def step(conn: sqlite3.Connection, limit: int) -> int:
            expired = {"now": at, "limit": limit}
            removed: int = conn.execute(Q["job_prune_finished__expired"], expired).rowcount
            for state, max_age in ages:
                if max_age is None or removed >= limit:
                    continue
                args = {"state": state.value, "cutoff": at - max_age, "limit": limit - removed}
                removed += conn.execute(Q["job_prune_finished"], args).rowcount
            if retention.completed_max_count is not None:
                for row in rows_of(conn, "job_list__queues", {}):
                    if removed >= limit:
                        break
                    args = {
                        "queue": row["name"],
                        "keep": retention.completed_max_count,
                        "limit": limit - removed,
                    }
                    removed += conn.execute(Q["job_prune_finished__trim_completed"], args).rowcount
            # Idle group records have a budget of their own, so finished jobs never crowd them
            # out; the count returned is of jobs.
            groups.prune(conn, at, limit)
            return removed

        removed = 0
        while removed < limit:  # in chunks, each its own transaction: producers get in between
            chunk = min(limit - removed, MAINTENANCE_CHUNK)
            done = await self._db.write(partial(step, limit=chunk), kind="prune")
            removed += done
            if done < chunk:
                break
        # Pages freed by deleted jobs go back to the file system a bounded step per call (see
        # vacuum_surplus); the check reads the file's header without the write lock.
        pages = await self._db.run(vacuum_surplus)
        if pages:
            await self._db.write(lambda conn: vacuum_step(conn, pages), kind="vacuum")
        return removed

    async def job_progress_many(
        self, updates: Sequence[ProgressUpdate], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_progress(updates)
        at = resolve_now(now)
        if not updates:
            return []
        return await self._db.write(lambda conn: progress_many(conn, updates, at), kind="progress")

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]:
        if not ids:
            return []
        args = {"ids": json.dumps(list(ids))}
        rows = await self._db.run(lambda conn: rows_of(conn, "job_get_many", args))
        found = {row["id"]: record_of(row) for row in rows}
        return [found.get(job_id) for job_id in ids]

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        if params.limit <= 0:
            return []
        states = list(dict.fromkeys(params.states or JobState))

        def step(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if params.queue is not None:
                queues = [params.queue]
            else:
                queues = [row["name"] for row in rows_of(conn, "job_list__queues", {})]
            ranges: list[list[sqlite3.Row]] = []
            for queue in queues:
                for state in states:
                    args = {
                        "queue": queue,
                        "state": state.value,
                        "name": params.name,
                        "before_seq": params.before_seq,
                        "limit": params.limit,
                    }
                    ranges.append(rows_of(conn, "job_list", args))
            merged = heapq.merge(*ranges, key=lambda row: row["seq"], reverse=True)
            return list(itertools.islice(merged, params.limit))

        return [record_of(row) for row in await self._db.read(step)]

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        rows = await self._db.run(
            lambda conn: rows_of(conn, "job_count_by_state", {"queue": queue})
        )
        counts = dict.fromkeys(JobState, 0)
        for row in rows:
            counts[JobState(row["state"])] = row["n"]
        return counts

    def notify(self, queue: str) -> None:
        self._listener.board.notify(queue)

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        """Return on an in-process notification for ``queues``, when another connection (any
        process) committed since this driver last looked, or after ``timeout`` seconds.

        Like the memory driver, it returns at once for a notification since the previous
        ``listen`` returned, and it does not wake when a delayed job merely becomes due; callers
        bound ``timeout`` for that.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self._db.is_open:
                return  # closed while waiting (shutdown): nothing more to wait for
            version = await self._db.run(data_version)
            if version != self._data_version or self._listener.pending(queues):
                self._data_version = version
                self._poll = POLL_MIN_SECONDS
                self._listener.catch_up(queues)
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._listener.catch_up(queues)
                return
            await self._listener.wait(queues, min(remaining, self._poll))
            # Poll often right after activity, then back off while the file stays quiet.
            self._poll = min(self._poll * 2, POLL_MAX_SECONDS)

    async def cancel_listen(self, worker_id: str, timeout: float) -> list[str]:
        await asyncio.sleep(timeout)  # no notifications: cancels arrive with lease renewals
        return []

    async def cron_register(
        self, schedules: Sequence[CronSchedule], *, now: float | None = None
    ) -> dict[str, int | None]:
        check_now(now)
        check_cron_schedules(schedules)
        at = resolve_now(now)
        return await self._db.write(lambda conn: _cron.register(conn, schedules, at))

    async def cron_fire(self, fire: CronFire, *, now: float | None = None) -> CronFireResult:
        check_now(now)
        check_cron_fire(fire)
        at = resolve_now(now)
        result = await self._db.write(lambda conn: _cron.fire(conn, fire, at))
        if result.status is CronFireStatus.FIRED:
            self.notify(fire.job.queue)
        return result

    async def cron_list(self) -> list[CronInfo]:
        return await self._db.run(_cron.listing)


def _refuse_missing(path: str, url: str) -> None:
    if not os.path.exists(path):
        raise BackendUnavailable(
            f"no SQLite database at {os.path.abspath(path)} (from {url!r}); nothing was ever "
            "enqueued there: check --url, $CONVEYOR_URL or the working directory"
        )
