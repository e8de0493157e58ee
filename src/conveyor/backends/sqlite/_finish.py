"""The SQLite finish: a completer's batch written as a few short write transactions.

SQLite has one write lock for the whole file, and producers wait for it. A batch of finishes is
therefore cut into chunks, each its own transaction, so producers get in between; and the hot
path, plain jobs completed, is one statement per chunk (every statement costs a round of
releasing and retaking the GIL on this thread with the lock held, which under a busy event
loop is up to the interpreter's switch interval). What can be read outside the lock is: which
jobs are grouped (only a job's own insert or a debounce of a scheduled job sets its group, so
an active job's group cannot change) and, when the statement matched fewer jobs than it was
given, why, which is read inside the chunk's transaction (the rare path).

Each chunk is atomic; a crash between two chunks leaves the earlier written and the later
still active with their leases, which expire and are rescued like any other lost attempt's.
Trimming the completed jobs beyond the retention count is a transaction of its own after the
chunks (maintenance trims too, should a crash come first). A chunk of plain completions alone,
and the trim, are single statements run as their own transactions (:func:`one_statement`):
the lock is then held only inside SQLite, never while this thread waits for the GIL.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final, NamedTuple

from conveyor.backends.sqlite import _groups as groups
from conveyor.backends.sqlite._connection import one_statement, transaction
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.backends.sqlite._statements import finish_one, not_finished, rows_of
from conveyor.drivers.records import (
    FinishJob,
    JobState,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
)

# Plain completions written by one statement, per transaction.
FAST_PER_CHUNK: Final = 128
# Other transitions (two to four statements each), per transaction, and the time after which
# a transaction takes no more of them (at least one is always written).
SLOW_PER_CHUNK: Final = 16
SLOW_SECONDS: Final = 0.002


@dataclass(slots=True)
class Written:
    """What the chunks written so far did: a result per finish (by position), the queues whose
    listeners are to be woken, and the queues where jobs completed."""

    results: dict[int, TransitionResult] = field(default_factory=dict[int, TransitionResult])
    woken: set[str] = field(default_factory=set[str])
    completed: set[str] = field(default_factory=set[str])


def finish_many(
    conn: sqlite3.Connection, finishes: Sequence[FinishJob], retention: Retention, at: float
) -> Written:
    """Write ``finishes``: the facts read first, then each chunk its own transaction (a chunk
    of completions alone as one statement), then the trim."""
    known = facts(conn, finishes)
    written = Written()
    for fast, slow in chunks(finishes, known):
        if not slow:
            write_fast(conn, fast, known, at, written)
            continue
        left = transaction(
            conn,
            partial(write_chunk, fast=fast, slow=slow, known=known, at=at, written=written),
            kind="finish",
        )
        while left:  # what the chunk's time cap kept out
            left = transaction(
                conn,
                partial(write_chunk, fast=[], slow=left, known=known, at=at, written=written),
                kind="finish",
            )
    if written.completed:
        trim(conn, written.completed, retention)
    return written


class Facts(NamedTuple):
    """What is known of a job before its finish is written, read outside the write lock."""

    queue: str
    grouped: bool
    # The token of the attempt that last ended, when the job is not active: a finish sent
    # again with it was already applied (a new lease always brings a new token).
    ended_token: str | None


def facts(conn: sqlite3.Connection, finishes: Sequence[FinishJob]) -> dict[str, Facts]:
    """Each existing job's queue, whether it is grouped, and its ended attempt's token."""
    ids = json.dumps([finish.job_id for finish in finishes])
    return {
        row["id"]: Facts(
            row["queue"],
            row["group_key"] is not None,
            None if row["state"] == JobState.ACTIVE.value else row["lease_token"],
        )
        for row in rows_of(conn, "job_finish_many__facts", {"ids": ids})
    }


def chunks(
    finishes: Sequence[FinishJob], known: dict[str, Facts]
) -> list[tuple[list[tuple[int, FinishJob, str | None]], list[tuple[int, FinishJob]]]]:
    """The batch cut into transactions, in its order: each up to :data:`FAST_PER_CHUNK` plain
    completions (with their result as text) and :data:`SLOW_PER_CHUNK` other transitions, and
    no job twice."""
    cut: list[tuple[list[tuple[int, FinishJob, str | None]], list[tuple[int, FinishJob]]]] = []
    fast: list[tuple[int, FinishJob, str | None]] = []
    slow: list[tuple[int, FinishJob]] = []
    ids: set[str] = set()
    for position, finish in enumerate(finishes):
        if finish.job_id in ids:
            # A job finished twice in one batch: the first must be applied first, and within a
            # chunk the completions' statement runs before the other transitions.
            cut.append((fast, slow))
            fast, slow, ids = [], [], set()
        ids.add(finish.job_id)
        one_statement, text = _fast_result(finish, known)
        if one_statement:
            fast.append((position, finish, text))
        else:
            slow.append((position, finish))
        if len(fast) >= FAST_PER_CHUNK or len(slow) >= SLOW_PER_CHUNK:
            cut.append((fast, slow))
            fast, slow, ids = [], [], set()
    if fast or slow:
        cut.append((fast, slow))
    return cut


def _fast_result(finish: FinishJob, known: dict[str, Facts]) -> tuple[bool, str | None]:
    """Whether the finish can take the one-statement path, and its result as text: not for
    other transitions, a grouped job (its group may be freed), or a result that is not text the
    statement can carry (it travels in JSON and is cast back to a BLOB)."""
    fact = known.get(finish.job_id)
    if finish.kind is not TransitionKind.COMPLETE or (fact is not None and fact.grouped):
        return False, None
    if finish.result is None:
        return True, None
    try:
        text = finish.result.decode("utf-8")
    except UnicodeDecodeError:
        return False, None
    return "\x00" not in text, text


def write_fast(
    conn: sqlite3.Connection,
    fast: list[tuple[int, FinishJob, str | None]],
    known: dict[str, Facts],
    at: float,
    written: Written,
) -> None:
    """Write a chunk of plain completions alone: one statement, its own transaction (see
    :func:`one_statement`). When it changed fewer jobs than it was given, why is read after
    its commit; what that read finds is what a read inside would have found, but for a change
    made since by someone else (then that is what the caller is told)."""
    batch = json.dumps([[finish.job_id, finish.token, text] for _, finish, text in fast])
    args = {"batch": batch, "now": at}
    changed: int = one_statement(
        conn, lambda c: c.execute(Q["job_finish_many__complete_all"], args).rowcount, "finish"
    )
    _complete_results(conn, fast, changed, known, written)


def _complete_results(
    conn: sqlite3.Connection,
    fast: list[tuple[int, FinishJob, str | None]],
    changed: int,
    known: dict[str, Facts],
    written: Written,
) -> None:
    everyone = changed == len(fast)
    for position, finish, _ in fast:
        status = TransitionStatus.OK if everyone else not_finished(conn, finish)
        written.results[position] = TransitionResult(finish.job_id, status)
        fact = known.get(finish.job_id)
        # Only a completion written now adds to the queue's completed jobs; one written by an
        # earlier call (its reply lost) was trimmed for then.
        if status is TransitionStatus.OK and fact and fact.ended_token != finish.token:
            written.completed.add(fact.queue)


def _execute(conn: sqlite3.Connection, query: str, args: dict[str, object]) -> None:
    conn.execute(Q[query], args)


def write_chunk(
    conn: sqlite3.Connection,
    fast: list[tuple[int, FinishJob, str | None]],
    slow: list[tuple[int, FinishJob]],
    known: dict[str, Facts],
    at: float,
    written: Written,
) -> list[tuple[int, FinishJob]]:
    """Write one chunk in the caller's transaction; return the transitions left for the next
    one (those the time cap kept out)."""
    if fast:
        batch = json.dumps([[finish.job_id, finish.token, text] for _, finish, text in fast])
        changed = conn.execute(Q["job_finish_many__complete_all"], {"batch": batch, "now": at})
        _complete_results(conn, fast, changed.rowcount, known, written)
    started = time.perf_counter()
    for i, (position, finish) in enumerate(slow):
        if i and time.perf_counter() - started > SLOW_SECONDS:
            return slow[i:]
        rows = finish_one(conn, finish, at)
        if not rows:
            written.results[position] = TransitionResult(finish.job_id, not_finished(conn, finish))
            continue
        written.results[position] = TransitionResult(finish.job_id, TransitionStatus.OK)
        state = JobState(rows[0]["state"])
        if state is JobState.COMPLETED:
            written.completed.add(rows[0]["queue"])
        if state is JobState.QUEUED or groups.freed(conn, rows[0], at):
            written.woken.add(rows[0]["queue"])
    return []


def trim(conn: sqlite3.Connection, queues: set[str], retention: Retention) -> None:
    """Delete the completed jobs of ``queues`` beyond the newest ``completed_max_count``: one
    statement per queue, each its own transaction (see :func:`one_statement`)."""
    if retention.completed_max_count is None:
        return
    for queue in sorted(queues):
        args: dict[str, object] = {"queue": queue, "keep": retention.completed_max_count}
        one_statement(
            conn, partial(_execute, query="job_finish_many__trim_completed", args=args), "trim"
        )
