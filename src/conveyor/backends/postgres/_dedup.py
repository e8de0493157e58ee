"""Inserts with dedup keys on PostgreSQL: the rules of :mod:`conveyor.drivers.common` applied in
one transaction per batch, as a plan of statements (see :mod:`conveyor.drivers.transactional`)
that the driver runs on its own connection and ``insert_plan`` hands to a caller's.

Transaction-scoped advisory locks on the batch's (queue, key) pairs are taken first, all in one
statement and in one order, so two inserts with one key decide one after the other (the second
reads the holder the first wrote) and two batches whose keys overlap cannot deadlock. A batch
without keys never comes here: it stays the one statement of ``job_insert_many``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.backends.postgres._groups import group_columns, group_lock_args
from conveyor.backends.postgres._records import insert_statement
from conveyor.backends.postgres._results import insert_results
from conveyor.drivers.common import DedupHolder, dedup_decision, dedup_expiry
from conveyor.drivers.records import (
    DedupMode,
    InsertResult,
    InsertStatus,
    JobState,
    NewJob,
)
from conveyor.drivers.transactional import Plan, Row, Statement, run_plan_async


class ElsewhereError(Exception):
    """The caller's connection does not reach this store (``insert_plan`` says so in words)."""


def dedup_plan(
    jobs: Sequence[NewJob],
    now: float | None,
    queries: Mapping[str, bytes],
    channel: str,
    instance: str | None,
) -> Plan[list[InsertResult]]:
    """Insert ``jobs`` one after another (a later job sees what an earlier one wrote), those
    with a key through :func:`_keyed`. On a caller's connection (``instance`` given), first
    make sure it reaches this very store: a key's holder is read before anything is written."""
    if instance is not None:
        rows = yield _statement(queries, "meta_instance", {})
        if not rows or rows[0][0] != instance:
            raise ElsewhereError
    keyed = [(job.queue, job.dedup.key) for job in jobs if job.dedup is not None]
    if keyed:
        queues, keys = zip(*keyed, strict=True)
        yield _statement(
            queries, "job_insert_many__dedup_lock", {"queues": list(queues), "keys": list(keys)}
        )
    grouped = group_lock_args(jobs, now)
    if grouped is not None:  # every group of the batch, in one order, before any job is placed
        yield _statement(queries, "job_insert_many__group_lock", grouped)
    results: list[InsertResult] = []
    for job in jobs:
        if job.dedup is None:
            results += yield from _insert(job, now, queries, channel, instance)
        else:
            results.append((yield from _keyed(job, now, queries, channel, instance)))
    return results


def _statement(queries: Mapping[str, bytes], name: str, params: Mapping[str, Any]) -> Statement:
    return Statement(queries[name].decode(), params)


def _insert(
    job: NewJob,
    now: float | None,
    queries: Mapping[str, bytes],
    channel: str,
    instance: str | None,
) -> Plan[list[InsertResult]]:
    query, args = insert_statement([job], now, channel)
    rows = yield _statement(queries, query, {**args, "instance": instance})
    if not rows:  # the instance guard of the statement refused the connection
        raise ElsewhereError
    return insert_results([(r[0], r[1], r[2]) for r in rows])


def _keyed(
    job: NewJob,
    now: float | None,
    queries: Mapping[str, bytes],
    channel: str,
    instance: str | None,
) -> Plan[InsertResult]:
    dedup = job.dedup
    assert dedup is not None
    where = {"queue": job.queue, "key": dedup.key}  # locked by dedup_plan already
    rows = yield _statement(queries, "job_insert_many__dedup_holder", {**where, "now": now})
    at, holder_id, mode, expires_at, name, state, started_at, run_at = rows[0]
    holder = None
    if holder_id is not None and state is not None:
        holder = DedupHolder(
            job_id=holder_id,
            name=name,
            mode=DedupMode(mode),
            expires_at=expires_at,
            state=JobState(state),
            started=started_at is not None,
            run_at=run_at,
        )
    decision = dedup_decision(holder, job, at)
    if holder is not None and decision is InsertStatus.DUPLICATE:
        return InsertResult(holder.job_id, decision, holder.state)
    if holder is not None and decision is InsertStatus.REPLACED:
        new_run_at = job.run_at if job.run_at is not None else at + job.delay
        replaced = yield _statement(
            queries,
            "job_insert_many__dedup_replace",
            {
                "id": holder.job_id,
                "payload": job.payload,
                "headers": job.headers,
                "run_at": new_run_at,
                "now": at,
                **group_columns(job),
            },
        )
        if replaced:
            return InsertResult(holder.job_id, decision, JobState.SCHEDULED)
    # The key is free: the job is inserted and takes it, unless its id exists (a duplicate).
    (result,) = yield from _insert(job, at, queries, channel, instance)
    if result.status is InsertStatus.INSERTED:
        yield _statement(
            queries,
            "job_insert_many__dedup_take",
            {
                **where,
                "id": job.id,
                "mode": dedup.mode.value,
                "expires_at": dedup_expiry(dedup, at),
            },
        )
    return result


async def insert_with_dedup(
    conn: Any, jobs: Sequence[NewJob], now: float | None, queries: Mapping[str, bytes], channel: str
) -> list[InsertResult]:
    """:func:`dedup_plan` on the driver's own (autocommit) connection, in one transaction."""

    async def execute(statement: Statement) -> list[Row]:
        cur = await conn.execute(statement.sql.encode(), statement.params)
        if cur.description is None:
            return []
        return [tuple(row.values()) for row in await cur.fetchall()]

    async with conn.transaction():
        return await run_plan_async(dedup_plan(jobs, now, queries, channel, None), execute)
