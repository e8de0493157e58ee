"""The PostgreSQL driver: any number of workers on any number of hosts, and enqueue inside the
application's own transaction.

Every operation is one SQL statement (``queries.sql``), sent on an autocommit connection from a
pool, so it is one round trip and one transaction. Fetch locks with ``FOR UPDATE SKIP LOCKED``,
so concurrent fetchers never wait for each other or lease the same job. ``now=None`` means the
server's clock, so clock skew between worker hosts cannot cause false rescues. It behaves exactly
like the memory driver, the executable specification; the conformance suite checks that.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from conveyor._errors import BackendUnavailable, InvalidArgument
from conveyor.backends.postgres import _rates as rates
from conveyor.backends.postgres._cron import Cron, CronOperations
from conveyor.backends.postgres._dedup import ElsewhereError, dedup_plan, insert_with_dedup
from conveyor.backends.postgres._groups import (
    GroupOperations,
    fetch_grouped,
    groups_waiting,
    leased_rows,
)
from conveyor.backends.postgres._inspect import InspectOperations
from conveyor.backends.postgres._migrate import check_current, migrate
from conveyor.backends.postgres._notify import Notifications
from conveyor.backends.postgres._pool import Connections, fetch_rows
from conveyor.backends.postgres._records import (
    Row,
    insert_statement,
    progress_args,
    record_of,
)
from conveyor.backends.postgres._registry import RegistryOperations
from conveyor.backends.postgres._results import (
    as_if_waiting,
    change_results,
    finish_results,
    insert_results,
    progress_results,
    rescue_results,
    storable,
)
from conveyor.backends.postgres._sql import QUERIES, in_schema
from conveyor.backends.postgres._url import parse_url
from conveyor.drivers.common import (
    HISTORY_ERROR_CHARS,
    HISTORY_LIMIT,
    LOST_WHILE_CANCELLING,
    RETRYABLE_STATES,
    cancelled_error,
    check_finishes,
    check_new_jobs,
    check_now,
    check_progress,
    check_rate_limits,
    check_rescues,
)
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import (
    WAITING_STATES,
    ChangeResult,
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
    RescueJob,
    Retention,
    TransitionResult,
)
from conveyor.drivers.transactional import Dialect, Plan, Statement

T = TypeVar("T")


class PostgresDriver(
    rates.RateLimitOperations,
    GroupOperations,
    RegistryOperations,
    CronOperations,
    InspectOperations,
):
    """A pool of connections to one schema of one PostgreSQL database."""

    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.SHARED_ACROSS_PROCESSES,
            Capability.LISTEN_ACROSS_PROCESSES,
            Capability.CANCEL_NOTIFY,
        }
    )
    infrastructure_errors: tuple[type[Exception], ...] = (
        psycopg.OperationalError,
        psycopg.InterfaceError,
        psycopg_pool.PoolTimeout,
        psycopg_pool.PoolClosed,
        OSError,
    )

    def __init__(self, url: str) -> None:
        self._url = parse_url(url)
        self.url = self._url.shown
        self.source_url = url
        # As bytes: psycopg takes a query built at run time in no other form that type-checks.
        self._q = {
            name: in_schema(text, self._url.quoted_schema).encode()
            for name, text in QUERIES.items()
        }
        self._pool: Connections | None = None
        self._notifications: Notifications | None = None
        self._instance: str | None = None
        self._unreported: list[str] = []
        self._cron = Cron(self._url.quoted_schema, self._url.channel)

    def __repr__(self) -> str:
        return f"PostgresDriver({self.url!r})"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self, *, create: bool = True) -> None:
        if self._pool is not None:
            return
        try:
            conn = await psycopg.AsyncConnection.connect(self._url.conninfo, autocommit=True)
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"cannot connect to PostgreSQL at {self.url}: {exc}") from None
        async with conn:
            schema, quoted = self._url.schema, self._url.quoted_schema
            if create:
                self._unreported = await migrate(conn, schema, quoted)
            else:
                await check_current(conn, schema, quoted, self.url)
            cur = await conn.execute(self._q["meta_instance"])
            row = await cur.fetchone()
            self._instance = None if row is None else str(row[0])
        pool = Connections(
            self._url.conninfo, max_size=self._url.pool_max, name=f"conveyor:{self._url.schema}"
        )
        await pool.open()
        self._pool = pool
        self._notifications = Notifications(self._url.conninfo, self._url.channel, self.url)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        notifications, self._notifications = self._notifications, None
        if notifications is not None:
            await notifications.close()
        if pool is not None:
            await pool.close()

    def connect_another(self) -> PostgresDriver:
        return PostgresDriver(self.source_url)

    async def migrate(self) -> list[str]:
        if self._pool is None:
            await self.open()
        async with self._connections().connection() as conn:
            applied = await migrate(conn, self._url.schema, self._url.quoted_schema)
        applied, self._unreported = self._unreported + applied, []
        return applied

    async def setup_warnings(self) -> list[str]:
        return []

    # -- running statements ---------------------------------------------------------------------

    def _connections(self) -> Connections:
        if self._pool is None:
            raise BackendUnavailable(f"the PostgreSQL driver for {self.url} is not open")
        return self._pool

    async def _rows(self, query: str, args: Mapping[str, Any]) -> list[Row]:
        return await self._connections().rows(self._q[query], args)

    async def _run(self, conn: Any, query: str, args: Mapping[str, Any]) -> list[Row]:
        return await fetch_rows(conn, self._q[query], args)

    async def _with_connection(self, work: Callable[[Any, bool], Awaitable[T]]) -> T:
        return await self._connections().with_connection(work)

    # -- jobs -----------------------------------------------------------------------------------

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        check_now(now)
        check_new_jobs(jobs)
        if not jobs:
            return []
        query, args = insert_statement(jobs, now, self._url.channel)
        keyed = any(job.dedup is not None for job in jobs)

        async def run(conn: Any, retried: bool) -> list[InsertResult]:
            if keyed:  # several statements, in a transaction: see _dedup
                results = await insert_with_dedup(conn, jobs, now, self._q, self._url.channel)
            else:
                rows = await self._run(conn, query, args)
                results = insert_results(
                    [(r["id"], r["inserted_state"], r["existing_state"]) for r in rows]
                )
            if retried:  # the first try may have inserted them, its reply lost
                results = await self._own_duplicates(conn, jobs, results)
            return results

        return await self._with_connection(run)

    async def _own_duplicates(
        self, conn: Any, jobs: Sequence[NewJob], results: list[InsertResult]
    ) -> list[InsertResult]:
        """Results of an insert run again, with the jobs the first try wrote (the same queue,
        name, payload, priority and attempts under the same id) reported inserted, not
        duplicate."""
        duplicates = [r.id for r in results if r.status is InsertStatus.DUPLICATE]
        if not duplicates:
            return results
        stored = {
            row["id"]: record_of(row)
            for row in await self._run(conn, "job_get_many", {"ids": duplicates})
        }
        mine: set[str] = set()
        for job in jobs:
            found = stored.get(job.id)
            if found is not None and (
                found.queue,
                found.name,
                found.payload,
                found.priority,
                found.max_attempts,
            ) == (job.queue, job.name, job.payload, job.priority, job.max_attempts):
                mine.add(job.id)
        seen: set[str] = set()
        fixed: list[InsertResult] = []
        for result in results:
            if result.id in mine and result.id not in seen:
                fixed.append(InsertResult(result.id, InsertStatus.INSERTED, result.state))
            else:
                fixed.append(result)
            seen.add(result.id)
        return fixed

    @property
    def dialect(self) -> Dialect:
        return "postgresql"

    def insert_plan(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Plan[list[InsertResult]]:
        """``job_insert_many`` as one statement on the caller's connection, in the caller's
        transaction: the job exists if and only if that transaction commits, and workers are
        woken at the commit (a notification is delivered only then). Nothing is written unless
        the connection reaches this very store: the statement checks the store's instance
        id (a connection to a database without this schema fails, and aborts the caller's
        transaction, as any failed statement does in PostgreSQL)."""
        check_now(now)
        check_new_jobs(jobs)
        if self._instance is None:
            raise BackendUnavailable(f"open the queue on {self.url} before enqueueing with it")
        instance = self._instance
        query, args = insert_statement(jobs, now, self._url.channel)
        # Text parameters: a caller's driver may not know psycopg 3's binary %b (psycopg2).
        sql = re.sub(r"%\((\w+)\)b", r"%(\1)s", self._q[query].decode())
        refused = (
            f"the connection passed to enqueue does not reach the queue's store ({self.url}): "
            "pass a connection to that database, or enqueue without one"
        )

        def plan() -> Plan[list[InsertResult]]:
            if not jobs:
                return []
            try:
                if any(job.dedup is not None for job in jobs):
                    return (yield from dedup_plan(jobs, now, self._q, self._url.channel, instance))
                rows = yield Statement(sql, {**args, "instance": instance})
            except psycopg.errors.UndefinedTable as exc:
                # Another database, without this schema: one statement costs the caller one
                # round trip, and this mistake (like any failed statement) aborts their
                # transaction; it can only be rolled back.
                raise InvalidArgument(f"{refused} ({exc})") from exc
            except ElsewhereError:  # the instance check of an insert with keys
                raise InvalidArgument(refused) from None
            if not rows:
                raise InvalidArgument(refused)
            return insert_results([(r[0], r[1], r[2]) for r in rows])

        return plan()

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        if wait > 0:
            await self.listen(params.queues, wait)
        check_now(now)
        check_rate_limits(params.rate_limits)
        if not params.queues or params.limit <= 0:
            return []
        queues = list(dict.fromkeys(params.queues))
        args = {
            "now": now,
            "queues": queues,
            "limit": params.limit,
            "lease_seconds": params.lease_seconds,
            "worker_id": params.worker_id,
            # Begins every lease token of this fetch: if its reply is lost, the fetch run again
            # finds the jobs it leased instead of leasing others (and leaving these to nobody).
            "receipt": secrets.token_hex(8),
            # The statement first asks whether grouped work waits; if so it leases nothing
            # and fetch_grouped serves the fetch (see _groups).
            "probe": True,
        }

        limits = [r for r in params.rate_limits if r.queue in queues]

        def in_order(rows: list[Row]) -> list[Row]:
            # RETURNING yields rows in no promised order; callers rely on priority order.
            return sorted(rows, key=lambda r: (r["priority"], r["run_at"], r["seq"]))

        async def run(conn: Any, retried: bool) -> list[Row]:
            if retried:
                leased = await self._run(conn, "job_fetch__receipt", args)
                if leased:
                    return in_order(leased)
            if limits:
                return await rates.fetch_limited(conn, self._run, args, queues, limits)
            rows = await self._run(conn, "job_fetch", args)
            if groups_waiting(rows):  # in the order served (fetch_grouped)
                return await fetch_grouped(conn, self._run, args, queues, rows[0])
            return in_order(leased_rows(rows))

        return [record_of(row) for row in await self._with_connection(run)]

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        check_now(now)
        if not leases:
            return ExtendResult((), ())
        args = {
            "now": now,
            "lease_seconds": lease_seconds,
            "ids": [lease.job_id for lease in leases],
            "tokens": [lease.token for lease in leases],
            "isolated": [lease.isolated for lease in leases],
        }
        rows = await self._rows("job_extend_leases", args)
        held = {(row["id"], row["lease_token"]) for row in rows}
        cancel = {row["id"] for row in rows if row["cancel_requested"]}
        lost = [lease.job_id for lease in leases if (lease.job_id, lease.token) not in held]
        asked = [lease.job_id for lease in leases if (lease.job_id, lease.token) in held]
        return ExtendResult(tuple(lost), tuple(job_id for job_id in asked if job_id in cancel))

    async def job_finish_many(
        self,
        finishes: Sequence[FinishJob],
        *,
        retention: Retention,
        now: float | None = None,
    ) -> list[TransitionResult]:
        check_now(now)
        check_finishes(finishes)
        if not finishes:
            return []
        args = {
            "now": now,
            "channel": self._url.channel,
            "keep": retention.completed_max_count,
            "keep_errors": HISTORY_LIMIT,
            "error_chars": HISTORY_ERROR_CHARS,
            "ids": [f.job_id for f in finishes],
            "tokens": [f.token for f in finishes],
            "kinds": [f.kind.value for f in finishes],
            "results": [f.result for f in finishes],
            "errors": [f.error for f in finishes],
            "cancel_errors": [cancelled_error(f.error) for f in finishes],
            "delays": [float(f.delay) for f in finishes],
        }
        rows = await self._rows("job_finish_many", args)
        results, completed = finish_results(finishes, rows)
        keep = retention.completed_max_count
        overflowing = [queue for queue, n in completed.items() if keep is not None and n > keep]
        if overflowing:  # rare: a batch that alone completes more than the queue keeps
            trim = {"keep": keep, "queues": overflowing, "limit": sum(completed.values())}
            await self._rows("job_prune_finished__trim_completed", trim)
        return results

    async def job_expired(self, *, limit: int, now: float | None = None) -> list[JobRecord]:
        check_now(now)
        if limit <= 0:
            return []
        return [record_of(r) for r in await self._rows("job_expired", {"now": now, "limit": limit})]

    async def job_rescue_many(
        self, rescues: Sequence[RescueJob], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_rescues(rescues)
        if not rescues:
            return []
        args = {
            "now": now,
            "channel": self._url.channel,
            "keep_errors": HISTORY_LIMIT,
            "error_chars": HISTORY_ERROR_CHARS,
            "ids": [r.job_id for r in rescues],
            "tokens": [r.token for r in rescues],
            "kinds": [r.kind.value for r in rescues],
            "stalls": [r.stalls for r in rescues],
            "errors": [r.error for r in rescues],
            "cancel_errors": [cancelled_error(LOST_WHILE_CANCELLING) for _ in rescues],
        }
        return rescue_results(rescues, await self._rows("job_rescue_many", args))

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        check_now(now)
        if limit <= 0:
            return 0
        args = {"now": now, "limit": limit, "channel": self._url.channel}
        rows = await self._rows("job_promote_due", args)
        return int(rows[0]["moved"])

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        check_now(now)
        if not ids:
            return []
        args = {"now": now, "ids": storable(ids), "channel": self._url.channel}

        async def run(conn: Any, retried: bool) -> list[Row]:
            found = await self._run(conn, "job_cancel_many", args)
            if retried:  # a first try that committed, its reply lost, cancelled these
                found = [as_if_waiting(row) for row in found]
            return found

        found = await self._with_connection(run)
        return change_results(ids, found, WAITING_STATES, JobState.CANCELLED, cancels=True)

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        check_now(now)
        if not ids:
            return []
        args = {"now": now, "ids": storable(ids), "channel": self._url.channel}
        found = await self._rows("job_retry_many", args)
        return change_results(ids, found, RETRYABLE_STATES, JobState.QUEUED, cancels=False)

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int:
        if not params.states:
            return 0
        args = {
            "states": [state.value for state in params.states],
            "queue": params.queue,
            "finished_before": params.finished_before,
        }

        async def run(conn: Any, retried: bool) -> int:
            rows = await self._run(conn, "job_purge", args)
            return int(rows[0]["purged"])

        return await self._with_connection(run)

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        check_now(now)
        if limit <= 0:
            return 0
        ages = (
            (JobState.COMPLETED, retention.completed_max_age),
            (JobState.FAILED, retention.failed_max_age),
            (JobState.CANCELLED, retention.cancelled_max_age),
        )

        async def run(conn: Any, retried: bool) -> int:
            at = now
            if at is None:
                cur = await conn.execute(b"SELECT extract(epoch FROM now())::float8 AS now")
                row = await cur.fetchone()
                at = float(row["now"])
            expired = {"now": at, "limit": limit}
            cur = await conn.execute(self._q["job_prune_finished__expired"], expired)
            removed = int(cur.rowcount)
            for state, max_age in ages:
                if max_age is None or removed >= limit:
                    continue
                by_age = {"state": state.value, "cutoff": at - max_age, "limit": limit - removed}
                query = (
                    "job_prune_finished__completed"
                    if state is JobState.COMPLETED
                    else "job_prune_finished"
                )
                cur = await conn.execute(self._q[query], by_age)
                removed += cur.rowcount
            if retention.completed_max_count is not None and removed < limit:
                by_count = {
                    "keep": retention.completed_max_count,
                    "queues": None,
                    "limit": limit - removed,
                }
                cur = await conn.execute(self._q["job_prune_finished__trim_completed"], by_count)
                removed += cur.rowcount
            # Idle group records, a budget of their own (finished jobs never crowd them out),
            # not counted in what is returned: that counts jobs.
            idle = {"now": at, "limit": limit}
            await conn.execute(self._q["job_prune_finished__groups"], idle)
            return removed

        return await self._with_connection(run)

    async def job_progress_many(
        self, updates: Sequence[ProgressUpdate], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_progress(updates)
        if not updates:
            return []
        return progress_results(await self._rows("job_progress_many", progress_args(updates, now)))

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]:
        if not ids:
            return []
        rows = await self._rows("job_get_many", {"ids": storable(ids)})
        found = {row["id"]: record_of(row) for row in rows}
        return [found.get(job_id) for job_id in ids]

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        if params.limit <= 0 or "\x00" in (params.queue or "") + (params.name or ""):
            return []  # a name with a NUL names no job: none could be stored
        args = {
            "queue": params.queue,
            "states": [state.value for state in dict.fromkeys(params.states or JobState)],
            "name": params.name,
            "before_seq": params.before_seq,
            "limit": params.limit,
        }
        return [record_of(row) for row in await self._rows("job_list", args)]

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for row in await self._rows("job_count_by_state", {"queue": queue}):
            counts[JobState(row["state"])] = int(row["n"])
        return counts

    # -- wake-ups ------------------------------------------------------------------------------

    def notify(self, queue: str) -> None:
        if self._notifications is not None:
            self._notifications.board.notify(queue)

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        """Return on a notification for ``queues`` from any process (or this one), or after
        ``timeout`` seconds. The first call starts listening, then returns at once if jobs
        wait already (they may have committed before it listened)."""
        if self._notifications is None:
            await asyncio.sleep(timeout)
            return
        await self._notifications.listen(queues, timeout, self._runnable)

    async def _runnable(self, queues: Sequence[str]) -> bool:
        rows = await self._rows("listen__runnable", {"queues": list(queues)})
        return bool(rows[0]["runnable"])

    async def cancel_listen(self, worker_id: str, timeout: float) -> list[str]:
        if self._notifications is None:
            await asyncio.sleep(timeout)
            return []
        return await self._notifications.cancel_listen(worker_id, timeout, self._cancel_requested)

    async def _cancel_requested(self, worker_id: str) -> list[str]:
        rows = await self._rows("cancel_listen__requested", {"worker_id": worker_id})
        return [row["id"] for row in rows]


__all__ = ["PostgresDriver"]
