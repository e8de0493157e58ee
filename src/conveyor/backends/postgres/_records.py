"""Rows of the PostgreSQL backend read back as records, and records written as arguments."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from conveyor.drivers.common import history_from_json
from conveyor.drivers.records import (
    AttemptError,
    JobRecord,
    JobState,
    NewJob,
    ProgressUpdate,
    WorkerInfo,
)

Row = dict[str, Any]


def record_of(row: Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        queue=row["queue"],
        name=row["name"],
        payload=bytes(row["payload"]),
        state=JobState(row["state"]),
        priority=row["priority"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        run_at=row["run_at"],
        enqueued_at=row["enqueued_at"],
        seq=row["seq"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        worker_id=row["worker_id"],
        stalls=row["stalls"],
        cancel_requested=row["cancel_requested"],
        result=None if row["result"] is None else bytes(row["result"]),
        error=row["error"],
        errors=_history(row["errors"]),
        isolated=row["isolated"],
        progress=row["progress"],
        progress_message=row["progress_message"],
        progress_at=row["progress_at"],
        keep_completed=row["keep_completed"],
        keep_failed=row["keep_failed"],
        expires_at=row["expires_at"],
        group=row["group_key"],
        headers=row["headers"],
    )


def _history(value: object) -> tuple[AttemptError, ...]:
    # jsonb arrives parsed; a value that is not a history (edited by hand) reads as none.
    if value is None:
        return ()
    return history_from_json(json.dumps(value))


def worker_of(row: Row) -> WorkerInfo:
    return WorkerInfo(
        id=row["id"],
        hostname=row["hostname"],
        pid=row["pid"],
        queues=_names(row["queues"]),
        concurrency=row["concurrency"],
        started_at=row["started_at"],
        last_seen_at=row["last_seen_at"],
        running=row["running"],
        processed=row["processed"],
        names=_names(row["names"]),
    )


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in cast("list[object]", value))


def heartbeat_args(info: WorkerInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "hostname": info.hostname,
        "pid": info.pid,
        "queues": json.dumps(list(info.queues)),
        "names": json.dumps(list(info.names)),
        "concurrency": info.concurrency,
        "started_at": info.started_at,
        "running": info.running,
        "processed": info.processed,
    }


def insert_statement(
    jobs: Sequence[NewJob], now: float | None, channel: str
) -> tuple[str, dict[str, Any]]:
    """The query that inserts ``jobs``, and its arguments: one job (a single enqueue, the common
    case) has a statement of its own, whose plan PostgreSQL caches; a batch travels as arrays.
    ``instance`` is filled in for a write on a caller's connection."""
    common = {"now": now, "instance": None, "channel": channel}
    if any(job.group is not None for job in jobs):
        # A statement of its own, so the plain ones (and their cached plans) stay as they were.
        return "job_insert_many__grouped", {**common, **_batch(jobs), **_groups(jobs)}
    if len(jobs) == 1:
        (job,) = jobs
        return "job_insert_many__one", {
            **common,
            "id": job.id,
            "queue": job.queue,
            "name": job.name,
            "payload": job.payload,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
            "run_at": None if job.run_at is None else float(job.run_at),
            "delay": float(job.delay),
            "keep_completed": _seconds(job.keep_completed),
            "keep_failed": _seconds(job.keep_failed),
            "headers": job.headers,
        }
    return "job_insert_many", {**common, **_batch(jobs)}


def _batch(jobs: Sequence[NewJob]) -> dict[str, Any]:
    return {
        "ids": [job.id for job in jobs],
        "queues": [job.queue for job in jobs],
        "names": [job.name for job in jobs],
        "payloads": [job.payload for job in jobs],
        "priorities": [job.priority for job in jobs],
        "max_attempts": [job.max_attempts for job in jobs],
        "run_ats": [None if job.run_at is None else float(job.run_at) for job in jobs],
        "delays": [float(job.delay) for job in jobs],
        "keep_completeds": [_seconds(job.keep_completed) for job in jobs],
        "keep_faileds": [_seconds(job.keep_failed) for job in jobs],
        "headers": [job.headers for job in jobs],
    }


def _groups(jobs: Sequence[NewJob]) -> dict[str, Any]:
    groups = [job.group for job in jobs]
    return {
        "group_keys": [None if g is None else g.key for g in groups],
        "group_concurrencies": [None if g is None else g.concurrency for g in groups],
        "group_rate_counts": [None if g is None else g.rate_count for g in groups],
        "group_rate_pers": [None if g is None else float(g.rate_per) for g in groups],
    }


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


def progress_args(updates: Sequence[ProgressUpdate], now: float | None) -> dict[str, Any]:
    return {
        "now": now,
        "ids": [u.job_id for u in updates],
        "tokens": [u.token for u in updates],
        "fractions": [float(u.fraction) for u in updates],
        "messages": [u.message for u in updates],
    }
