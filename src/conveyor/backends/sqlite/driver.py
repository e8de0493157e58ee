"""The SQLite driver: the embedded default backend, for one host and any number of processes.

Each operation is one transaction on the driver's own connection (see :mod:`._connection`), so it
is atomic across processes sharing the file. It behaves exactly like the memory driver, the
executable specification; the conformance suite and a model-based test check that. ``now=None``
means this host's clock (``time.time()``), which every process on the host shares.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from conveyor.backends.sqlite._connection import Connection, migrate
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.backends.sqlite._url import path_from_url, synchronous_from_url
from conveyor.backends.sqlite._wakeup import POLL_MAX_SECONDS, POLL_MIN_SECONDS, wakeups_for
from conveyor.drivers.common import (
    LOST_WHILE_CANCELLING,
    RETRYABLE_STATES,
    RUNS_AGAIN,
    cancelled_error,
    resolve_now,
    stalled_error,
    validate_finishes,
)
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import (
    WAITING_STATES,
    ChangeResult,
    ChangeStatus,
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
    PurgeParams,
    QueueInfo,
    RescueResult,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
    WorkerInfo,
)
from conveyor.drivers.wakeup import Listener


class SQLiteDriver:
    """A connection to one SQLite file. Not shared between threads: use :meth:`connect_another`."""

    capabilities: frozenset[Capability] = frozenset(
        {Capability.SHARED_ACROSS_PROCESSES, Capability.LISTEN_ACROSS_PROCESSES}
    )
    # sqlite3 errors are mapped where they happen, with the file's name; what is left is the
    # operating system failing under it.
    infrastructure_errors: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_from_url(url)
        self._db = Connection(self.path, synchronous=synchronous_from_url(url))
        self._listener = Listener(wakeups_for(self.path))
        self._unreported: list[str] = []
        self._data_version = 0
        self._poll = POLL_MIN_SECONDS

    def __repr__(self) -> str:
        return f"SQLiteDriver({self.url!r})"

    async def open(self) -> None:
        if self._db.is_open:
            return
        self._unreported = await self._db.open()
        self._data_version = await self._db.run(_data_version)

    async def close(self) -> None:
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
        at = resolve_now(now)
        if not jobs:
            return []

        def step(conn: sqlite3.Connection) -> list[InsertResult]:
            seq = _reserve_seq(conn, len(jobs))
            results: list[InsertResult] = []
            # Enqueueing into a queue makes it known, even when every job was a duplicate.
            new_queues = {new.queue for new in jobs}
            for new in jobs:
                run_at = new.run_at if new.run_at is not None else at + new.delay
                state = JobState.SCHEDULED if run_at > at else JobState.QUEUED
                seq += 1
                cursor = conn.execute(
                    Q["job_insert_many"],
                    {
                        "id": new.id,
                        "queue": new.queue,
                        "name": new.name,
                        "payload": new.payload,
                        "state": state.value,
                        "priority": new.priority,
                        "max_attempts": new.max_attempts,
                        "run_at": run_at,
                        "now": at,
                        "seq": seq,
                    },
                )
                if cursor.rowcount == 1:
                    results.append(InsertResult(new.id, InsertStatus.INSERTED, state))
                else:
                    existing = _state(conn, new.id)
                    assert existing is not None
                    results.append(InsertResult(new.id, InsertStatus.DUPLICATE, existing))
            conn.executemany(
                Q["job_insert_many__register_queue"], [{"queue": q} for q in sorted(new_queues)]
            )
            return results

        results = await self._db.write(step)
        for queue in {job.queue for job in jobs}:
            self.notify(queue)
        return results

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        if wait > 0:
            await self.listen(params.queues, wait)
        return await self._fetch_now(params, now)

    async def _fetch_now(self, params: FetchParams, now: float | None) -> list[JobRecord]:
        at = resolve_now(now)
        if not params.queues or params.limit <= 0:
            return []

        def step(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            paused = {row["name"] for row in _all(conn, "job_fetch__paused", {})}
            candidates: list[sqlite3.Row] = []
            for queue in dict.fromkeys(params.queues):
                if queue in paused:
                    continue
                conn.execute(Q["job_fetch__promote"], {"queue": queue, "now": at})
                candidates += _all(
                    conn, "job_fetch__candidates", {"queue": queue, "limit": params.limit}
                )
            if not candidates:
                return []
            candidates.sort(key=lambda r: (r["priority"], r["run_at"], r["seq"]))
            args = {
                "ids": json.dumps([r["id"] for r in candidates[: params.limit]]),
                "now": at,
                "lease_seconds": params.lease_seconds,
                "worker_id": params.worker_id,
            }
            return _all(conn, "job_fetch", args)

        rows = await self._db.write(step)
        # RETURNING yields rows in no promised order; callers rely on priority order.
        return sorted(map(_job, rows), key=lambda j: (j.priority, j.run_at, j.seq))

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        at = resolve_now(now)
        if not leases:
            return ExtendResult((), ())

        def step(conn: sqlite3.Connection) -> ExtendResult:
            lost: list[str] = []
            cancel: list[str] = []
            for lease in leases:
                args = {"id": lease.job_id, "token": lease.token, "expires_at": at + lease_seconds}
                rows = _all(conn, "job_extend_leases", args)
                if not rows:
                    lost.append(lease.job_id)
                elif rows[0]["cancel_requested"]:
                    cancel.append(lease.job_id)
            return ExtendResult(tuple(lost), tuple(cancel))

        return await self._db.write(step)

    async def job_finish_many(
        self,
        finishes: Sequence[FinishJob],
        *,
        retention: Retention,
        now: float | None = None,
    ) -> list[TransitionResult]:
        at = resolve_now(now)
        validate_finishes(finishes)
        if not finishes:
            return []
        woken: set[str] = set()

        def step(conn: sqlite3.Connection) -> list[TransitionResult]:
            results: list[TransitionResult] = []
            completed_queues: set[str] = set()
            for finish in finishes:
                rows = _finish_one(conn, finish, at)
                if rows:
                    results.append(TransitionResult(finish.job_id, TransitionStatus.OK))
                    state = JobState(rows[0]["state"])
                    if state is JobState.COMPLETED:
                        completed_queues.add(rows[0]["queue"])
                    elif state is JobState.QUEUED:
                        woken.add(rows[0]["queue"])
                elif _state(conn, finish.job_id) is None:
                    results.append(TransitionResult(finish.job_id, TransitionStatus.NOT_FOUND))
                else:
                    results.append(TransitionResult(finish.job_id, TransitionStatus.LEASE_LOST))
            if retention.completed_max_count is not None:
                for queue in sorted(completed_queues):
                    conn.execute(
                        Q["job_finish_many__trim_completed"],
                        {"queue": queue, "keep": retention.completed_max_count},
                    )
            return results

        results = await self._db.write(step)
        for queue in woken:
            self.notify(queue)
        return results

    async def job_rescue_expired(
        self, *, max_stalls: int, limit: int, now: float | None = None
    ) -> RescueResult:
        at = resolve_now(now)
        if limit <= 0:
            return RescueResult((), ())

        def step(conn: sqlite3.Connection) -> tuple[RescueResult, set[str]]:
            requeued: list[str] = []
            failed: list[str] = []
            cancelled: list[str] = []
            queues: set[str] = set()
            for row in _all(conn, "job_rescue_expired", {"now": at, "limit": limit}):
                stalls = row["stalls"] + 1
                end = {"id": row["id"], "now": at, "stalls": stalls}
                if row["cancel_requested"]:
                    error = cancelled_error(LOST_WHILE_CANCELLING)
                    end |= {"state": JobState.CANCELLED.value, "error": error}
                    conn.execute(Q["job_rescue_expired__end"], end)
                    cancelled.append(row["id"])
                elif stalls > max_stalls:
                    error = stalled_error(stalls, max_stalls)
                    end |= {"state": JobState.FAILED.value, "error": error}
                    conn.execute(Q["job_rescue_expired__end"], end)
                    failed.append(row["id"])
                else:
                    conn.execute(
                        Q["job_rescue_expired__requeue"],
                        {"id": row["id"], "now": at, "stalls": stalls},
                    )
                    requeued.append(row["id"])
                    queues.add(row["queue"])
            return RescueResult(tuple(requeued), tuple(failed), tuple(cancelled)), queues

        result, queues = await self._db.write(step)
        for queue in queues:
            self.notify(queue)
        return result

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        at = resolve_now(now)
        if limit <= 0:
            return 0
        args = {"now": at, "limit": limit}
        rows = await self._db.write(lambda conn: _all(conn, "job_promote_due", args))
        for queue in {row["queue"] for row in rows}:
            self.notify(queue)
        return len(rows)

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        at = resolve_now(now)

        def step(conn: sqlite3.Connection) -> list[ChangeResult]:
            results: list[ChangeResult] = []
            for job_id in ids:
                state = _state(conn, job_id)
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
            seq = _reserve_seq(conn, len(ids))
            results: list[ChangeResult] = []
            queues: set[str] = set()
            for job_id in ids:
                state = _state(conn, job_id)
                if state is None:
                    results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
                elif state in RETRYABLE_STATES:
                    seq += 1
                    rows = _all(conn, "job_retry_many", {"id": job_id, "now": at, "seq": seq})
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

        def step(conn: sqlite3.Connection) -> int:
            removed = 0
            for state, max_age in ages:
                if max_age is None or removed >= limit:
                    continue
                args = {"state": state.value, "cutoff": at - max_age, "limit": limit - removed}
                removed += conn.execute(Q["job_prune_finished"], args).rowcount
            if retention.completed_max_count is not None and removed < limit:
                args = {"keep": retention.completed_max_count, "limit": limit - removed}
                removed += conn.execute(Q["job_prune_finished__trim_completed"], args).rowcount
            return removed

        return await self._db.write(step)

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]:
        if not ids:
            return []
        args = {"ids": json.dumps(list(ids))}
        rows = await self._db.run(lambda conn: _all(conn, "job_get_many", args))
        found = {row["id"]: _job(row) for row in rows}
        return [found.get(job_id) for job_id in ids]

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        args = {
            "queue": params.queue,
            "any_state": not params.states,
            "states": json.dumps([state.value for state in params.states]),
            "name": params.name,
            "before_seq": params.before_seq,
            "limit": max(params.limit, 0),
        }
        rows = await self._db.run(lambda conn: _all(conn, "job_list", args))
        return [_job(row) for row in rows]

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        rows = await self._db.run(lambda conn: _all(conn, "job_count_by_state", {"queue": queue}))
        counts = dict.fromkeys(JobState, 0)
        for row in rows:
            counts[JobState(row["state"])] = row["n"]
        return counts

    async def queue_list(self) -> list[QueueInfo]:
        def step(conn: sqlite3.Connection) -> list[QueueInfo]:
            counts: dict[str, dict[JobState, int]] = {}
            for row in _all(conn, "queue_list__counts", {}):
                per_queue = counts.setdefault(row["queue"], dict.fromkeys(JobState, 0))
                per_queue[JobState(row["state"])] = row["n"]
            return [
                QueueInfo(
                    row["name"],
                    bool(row["paused"]),
                    counts.get(row["name"], dict.fromkeys(JobState, 0)),
                )
                for row in _all(conn, "queue_list", {})
            ]

        return await self._db.read(step)

    async def queue_pause(self, queue: str) -> None:
        await self._db.write(lambda conn: conn.execute(Q["queue_pause"], {"queue": queue}))

    async def queue_resume(self, queue: str) -> None:
        await self._db.write(lambda conn: conn.execute(Q["queue_resume"], {"queue": queue}))
        self.notify(queue)

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        at = resolve_now(now)
        args = {
            "id": info.id,
            "hostname": info.hostname,
            "pid": info.pid,
            "queues": json.dumps(list(info.queues)),
            "concurrency": info.concurrency,
            "started_at": info.started_at,
            "now": at,
            "running": info.running,
            "processed": info.processed,
            "expires_at": at + ttl,
        }
        await self._db.write(lambda conn: conn.execute(Q["worker_heartbeat"], args))

    async def worker_deregister(self, worker_id: str) -> None:
        await self._db.write(lambda conn: conn.execute(Q["worker_deregister"], {"id": worker_id}))

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        at = resolve_now(now)
        rows = await self._db.run(lambda conn: _all(conn, "worker_list", {"now": at}))
        return [
            WorkerInfo(
                id=row["id"],
                hostname=row["hostname"],
                pid=row["pid"],
                queues=tuple(json.loads(row["queues"])),
                concurrency=row["concurrency"],
                started_at=float(row["started_at"]),
                last_seen_at=float(row["last_seen_at"]),
                running=row["running"],
                processed=row["processed"],
            )
            for row in rows
        ]

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        at = resolve_now(now)
        args = {"name": name, "holder": holder, "expires_at": at + ttl, "now": at}
        rows = await self._db.write(lambda conn: _all(conn, "leader_acquire", args))
        return bool(rows)

    async def leader_release(self, name: str, holder: str) -> None:
        args = {"name": name, "holder": holder}
        await self._db.write(lambda conn: conn.execute(Q["leader_release"], args))

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
            version = await self._db.run(_data_version)
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


def _all(conn: sqlite3.Connection, query: str, args: dict[str, Any]) -> list[sqlite3.Row]:
    # Always drain the cursor: a half-read statement would keep the transaction from committing.
    return conn.execute(Q[query], args).fetchall()


def _state(conn: sqlite3.Connection, job_id: str) -> JobState | None:
    rows = _all(conn, "job__state", {"id": job_id})
    return JobState(rows[0]["state"]) if rows else None


def _reserve_seq(conn: sqlite3.Connection, count: int) -> int:
    """Reserve ``count`` sequence numbers; return the one before the first reserved."""
    last: int = _all(conn, "sequence__reserve", {"count": count})[0]["value"]
    return last - count


def _data_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute(Q["listen__data_version"]).fetchall()[0][0]
    return version


def _finish_one(conn: sqlite3.Connection, finish: FinishJob, at: float) -> list[sqlite3.Row]:
    """Apply one fenced transition; return the job's new ``queue`` and ``state`` if it held."""
    fence = {"id": finish.job_id, "token": finish.token, "now": at}
    if finish.kind in RUNS_AGAIN:
        # Someone asked to cancel the job before it stopped: it must not run again.
        args = {**fence, "error": cancelled_error(finish.error)}
        rows = _all(conn, "job_finish_many__cancel_requested", args)
        if rows:
            return rows
    match finish.kind:
        case TransitionKind.COMPLETE:
            return _all(conn, "job_finish_many__complete", {**fence, "result": finish.result})
        case TransitionKind.FAIL | TransitionKind.CANCEL:
            state = JobState.FAILED if finish.kind is TransitionKind.FAIL else JobState.CANCELLED
            args = {**fence, "state": state.value, "error": finish.error}
            return _all(conn, "job_finish_many__end", args)
        case TransitionKind.RETRY:
            args = {**fence, "run_at": finish.run_at, "error": finish.error}
            return _all(conn, "job_finish_many__retry", args)
        case TransitionKind.SNOOZE | TransitionKind.REQUEUE:
            state = JobState.SCHEDULED if finish.kind is TransitionKind.SNOOZE else JobState.QUEUED
            run_at = finish.run_at if finish.kind is TransitionKind.SNOOZE else None
            args = {**fence, "state": state.value, "run_at": run_at}
            return _all(conn, "job_finish_many__give_back", args)
    raise AssertionError(f"unknown transition {finish.kind!r}")  # pragma: no cover


def _float(value: float | None) -> float | None:
    # SQLite hands back whole REAL values bound as integers (notably through RETURNING) as int.
    return None if value is None else float(value)


def _blob(value: bytes | str | None) -> bytes | None:
    # Rows written by a foreign producer may hold TEXT where we write BLOB.
    return value.encode() if isinstance(value, str) else value


def _job(row: sqlite3.Row) -> JobRecord:
    payload = _blob(row["payload"])
    return JobRecord(
        id=row["id"],
        queue=row["queue"],
        name=row["name"],
        payload=payload if payload is not None else b"",
        state=JobState(row["state"]),
        priority=row["priority"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        run_at=float(row["run_at"]),
        enqueued_at=float(row["enqueued_at"]),
        seq=row["seq"],
        started_at=_float(row["started_at"]),
        finished_at=_float(row["finished_at"]),
        lease_token=row["lease_token"],
        lease_expires_at=_float(row["lease_expires_at"]),
        worker_id=row["worker_id"],
        stalls=row["stalls"],
        cancel_requested=bool(row["cancel_requested"]),
        result=_blob(row["result"]),
        error=row["error"],
    )
