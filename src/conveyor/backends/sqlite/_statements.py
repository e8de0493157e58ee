"""The SQLite driver's statements that several operations share: running a named query,
applying one fenced transition, and reading a row into a :class:`JobRecord`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.drivers.common import (
    HISTORY_ERROR_CHARS,
    HISTORY_LIMIT,
    cancel_wins,
    cancelled_error,
    history_from_json,
)
from conveyor.drivers.records import (
    FinishJob,
    JobRecord,
    JobState,
    ProgressUpdate,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
)


def rows_of(conn: sqlite3.Connection, query: str, args: dict[str, Any]) -> list[sqlite3.Row]:
    # Always drain the cursor: a half-read statement would keep the transaction from committing.
    return conn.execute(Q[query], args).fetchall()


# How many rows of a queue's head a worker serving only some names reads, per row it wants,
# before it reads one range per name instead.
HEAD_ROWS_PER_JOB = 4
HEAD_ROWS_MIN = 64
# How many priorities the unknown-name rule reads, most urgent first, in one fetch.
UNKNOWN_PRIORITIES_READ = 32

Candidate = tuple[tuple[int, float, int], str]  # (run order key, id)


def fetch_candidates(
    conn: sqlite3.Connection,
    queue: str,
    limit: int,
    names: tuple[str, ...] | None,
    unknown_before: float | None,
) -> list[Candidate]:
    """The first ``limit`` jobs of ``queue`` a fetch may lease, in run order, or a few more.

    Without ``names``, one ordered read of the ready index. With them, first the head of the
    queue, filtered here; only when jobs of other names fill that head, one index range per
    name (a job's cost never grows with the jobs of other names queued ahead of it) and the
    first jobs of any name runnable since ``unknown_before``, in run order."""
    if names is None:
        rows = rows_of(conn, "job_fetch__candidates", {"queue": queue, "limit": limit})
        return [_candidate(r) for r in rows]
    wanted = set(names)
    head = max(limit * HEAD_ROWS_PER_JOB, HEAD_ROWS_MIN)
    rows = rows_of(conn, "job_fetch__candidates", {"queue": queue, "limit": head})
    runnable = [
        r
        for r in rows
        if r["name"] in wanted or (unknown_before is not None and r["run_at"] <= unknown_before)
    ]
    if len(runnable) >= limit or len(rows) < head:
        return [_candidate(r) for r in runnable[:limit]]
    found = {r["id"]: r for r in runnable}
    for name in wanted:
        args = {"queue": queue, "name": name, "limit": limit}
        found.update((r["id"], r) for r in rows_of(conn, "job_fetch__candidates_named", args))
    if unknown_before is not None:
        found.update((r["id"], r) for r in _old_enough(conn, queue, limit, unknown_before))
    return [_candidate(r) for r in found.values()]


def _old_enough(
    conn: sqlite3.Connection, queue: str, limit: int, unknown_before: float
) -> list[sqlite3.Row]:
    """The first ``limit`` queued jobs in run order runnable since ``unknown_before``: one
    index range per priority present, most urgent first, at most
    :data:`UNKNOWN_PRIORITIES_READ` of them (a queue rarely uses more than a handful)."""
    found: list[sqlite3.Row] = []
    after = -(2**62)
    for _ in range(UNKNOWN_PRIORITIES_READ):
        if len(found) >= limit:
            break
        rows = rows_of(conn, "job_fetch__next_priority", {"queue": queue, "after": after})
        if not rows:
            break
        after = rows[0]["priority"]
        args = {"queue": queue, "priority": after, "unknown_before": unknown_before}
        found += rows_of(conn, "job_fetch__candidates_unknown", {**args, "limit": limit})
    return found[:limit]


def _candidate(row: sqlite3.Row) -> Candidate:
    return ((row["priority"], row["run_at"], row["seq"]), row["id"])


def state_of(conn: sqlite3.Connection, job_id: str) -> JobState | None:
    rows = rows_of(conn, "job__state", {"id": job_id})
    return JobState(rows[0]["state"]) if rows else None


def reserve_seq(conn: sqlite3.Connection, count: int) -> int:
    """Reserve ``count`` sequence numbers; return the one before the first reserved."""
    last: int = rows_of(conn, "sequence__reserve", {"count": count})[0]["value"]
    return last - count


def data_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute(Q["listen__data_version"]).fetchall()[0][0]
    return version


def finish_one(conn: sqlite3.Connection, finish: FinishJob, at: float) -> list[sqlite3.Row]:
    """Apply one fenced transition; return the job's new ``queue`` and ``state`` if it held."""
    fence = {"id": finish.job_id, "token": finish.token, "now": at}
    if finish.kind is TransitionKind.COMPLETE:  # the hot path: one statement
        return rows_of(conn, "job_finish_many__complete", {**fence, "result": finish.result})
    held = rows_of(conn, "job_finish_many__fence", fence)
    if not held:
        return []
    kind, error = finish.kind, finish.error
    if cancel_wins(kind, bool(held[0]["cancel_requested"])):
        # Someone asked to cancel the job before it stopped: it must not run again.
        kind, error = TransitionKind.CANCEL, cancelled_error(finish.error)
    note_error(conn, fence, error)
    match kind:
        case TransitionKind.FAIL | TransitionKind.CANCEL:
            state = JobState.FAILED if kind is TransitionKind.FAIL else JobState.CANCELLED
            return rows_of(
                conn, "job_finish_many__end", {**fence, "state": state.value, "error": error}
            )
        case TransitionKind.RETRY:
            args = {**fence, "delay": finish.delay, "error": error}
            return rows_of(conn, "job_finish_many__retry", args)
        case TransitionKind.SNOOZE | TransitionKind.REQUEUE:
            snooze = kind is TransitionKind.SNOOZE
            args = {
                **fence,
                "state": (JobState.SCHEDULED if snooze else JobState.QUEUED).value,
                "delay": finish.delay if snooze else None,
                "error": error,
            }
            return rows_of(conn, "job_finish_many__give_back", args)
    raise AssertionError(f"unknown transition {finish.kind!r}")  # pragma: no cover


def note_error(conn: sqlite3.Connection, fence: dict[str, Any], error: str | None) -> None:
    """Add ``error`` to the history of the fenced job (nothing when None or not fenced)."""
    if error is not None:
        args = {**fence, "error": error, "keep": HISTORY_LIMIT, "chars": HISTORY_ERROR_CHARS}
        conn.execute(Q["job__note_error"], args)


def not_finished(conn: sqlite3.Connection, finish: FinishJob) -> TransitionStatus:
    """Why a fenced finish matched nothing: the job is gone, owned by another attempt, or this
    very finish was applied by an earlier call whose reply was lost (then it is ``ok``)."""
    rows = rows_of(conn, "job__finished_with", {"id": finish.job_id})
    if not rows:
        return TransitionStatus.NOT_FOUND
    if rows[0]["state"] != JobState.ACTIVE.value and rows[0]["lease_token"] == finish.token:
        return TransitionStatus.OK
    return TransitionStatus.LEASE_LOST


def progress_many(
    conn: sqlite3.Connection, updates: Sequence[ProgressUpdate], at: float
) -> list[TransitionResult]:
    """Write each job's progress, fenced by its token, in the caller's transaction."""
    results: list[TransitionResult] = []
    for update in updates:
        args = {
            "id": update.job_id,
            "token": update.token,
            "fraction": float(update.fraction),
            "message": update.message,
            "now": at,
        }
        if conn.execute(Q["job_progress_many"], args).rowcount:
            status = TransitionStatus.OK
        elif state_of(conn, update.job_id) is None:
            status = TransitionStatus.NOT_FOUND
        else:
            status = TransitionStatus.LEASE_LOST
        results.append(TransitionResult(update.job_id, status))
    return results


def float_or_none(value: float | None) -> float | None:
    # SQLite hands back whole REAL values bound as integers (notably through RETURNING) as int.
    return None if value is None else float(value)


def blob_of(value: bytes | str | None) -> bytes | None:
    # Rows written by a foreign producer may hold TEXT where we write BLOB.
    return value.encode() if isinstance(value, str) else value


def text_or_none(value: str | bytes | None) -> str | None:
    # A foreign producer may have written a BLOB where we write TEXT; the core decodes headers
    # leniently, so undecodable bytes become replacement characters rather than a failed read.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def record_of(row: sqlite3.Row) -> JobRecord:
    payload = blob_of(row["payload"])
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
        started_at=float_or_none(row["started_at"]),
        finished_at=float_or_none(row["finished_at"]),
        lease_token=row["lease_token"],
        lease_expires_at=float_or_none(row["lease_expires_at"]),
        worker_id=row["worker_id"],
        stalls=row["stalls"],
        cancel_requested=bool(row["cancel_requested"]),
        result=blob_of(row["result"]),
        error=row["error"],
        errors=history_from_json(row["errors"]),
        isolated=bool(row["isolated"]),
        progress=float_or_none(row["progress"]),
        progress_message=row["progress_message"],
        progress_at=float_or_none(row["progress_at"]),
        keep_completed=float_or_none(row["keep_completed"]),
        keep_failed=float_or_none(row["keep_failed"]),
        expires_at=float_or_none(row["expires_at"]),
        group=row["group_key"],
        headers=text_or_none(row["headers"]),
    )
