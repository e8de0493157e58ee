"""The SQLite insert as a plan of statements (see :mod:`conveyor.drivers.transactional`).

One plan serves both doors: ``job_insert_many`` runs it on the driver's own connection inside
its ``BEGIN IMMEDIATE``, and ``insert_plan`` hands it to the caller, whose own connection runs it
inside the caller's transaction (after a first statement that checks that the connection is on
the queue's file). Parameters are named (``:name``), as sqlite3 takes them.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from conveyor._errors import InvalidArgument
from conveyor.backends.sqlite._dedup import dedup_step, take_step
from conveyor.backends.sqlite._groups import group_args
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.drivers.records import InsertResult, InsertStatus, JobState, NewJob
from conveyor.drivers.transactional import Plan, Row, Statement, run_plan


def insert_statements(jobs: Sequence[NewJob], at: float) -> Plan[list[InsertResult]]:
    """Reserve the jobs' sequence numbers, insert each one unless its id exists (then read the
    existing job's state: a duplicate), and register their queues."""
    if not jobs:
        return []
    (reserved,) = yield Statement(Q["sequence__reserve"], {"count": len(jobs)})
    seq = int(reserved[0]) - len(jobs)
    results: list[InsertResult] = []
    for new in jobs:
        run_at, state = placement(new, at)
        seq += 1
        if new.dedup is not None:
            deduplicated = yield from dedup_step(new, run_at, at)
            if deduplicated is not None:
                results.append(deduplicated)
                continue
        inserted = yield Statement(Q["job_insert_many"], {**job_args(new, at), "seq": seq})
        if inserted:
            if new.dedup is not None:
                yield from take_step(new, at)
            results.append(InsertResult(new.id, InsertStatus.INSERTED, state))
        else:
            (existing,) = yield Statement(Q["job__state"], {"id": new.id})
            results.append(InsertResult(new.id, InsertStatus.DUPLICATE, JobState(existing[0])))
    # Enqueueing into a queue makes it known, even when every job was a duplicate.
    for queue in sorted({new.queue for new in jobs}):
        yield Statement(Q["job_insert_many__register_queue"], {"queue": queue})
    return results


def write_all(conn: sqlite3.Connection, jobs: Sequence[NewJob], at: float) -> list[InsertResult]:
    """Run :func:`insert_statements` on ``conn``, in the caller's write transaction."""
    return run_plan(insert_statements(jobs, at), lambda s: conn.execute(s.sql, s.params).fetchall())


def placement(new: NewJob, at: float) -> tuple[float, JobState]:
    """When ``new`` runs and the state it starts in: scheduled if that is later than ``at``."""
    run_at = new.run_at if new.run_at is not None else at + new.delay
    return run_at, JobState.SCHEDULED if run_at > at else JobState.QUEUED


def job_args(new: NewJob, at: float) -> dict[str, object]:
    """The parameters of ``job_insert_many`` and ``job_insert_one`` but ``seq``."""
    run_at, state = placement(new, at)
    return {
        "id": new.id,
        "queue": new.queue,
        "name": new.name,
        "payload": new.payload,
        "state": state.value,
        "priority": new.priority,
        "max_attempts": new.max_attempts,
        "run_at": run_at,
        "now": at,
        "keep_completed": new.keep_completed,
        "keep_failed": new.keep_failed,
        "headers": new.headers,
        **group_args(new),
    }


def can_insert_alone(jobs: Sequence[NewJob], known_queues: AbstractSet[str]) -> bool:
    """Whether :func:`insert_alone` may write ``jobs``: one job, without a dedup key (whose
    check reads the key's holder first), into a queue this connection has registered before
    (queues are never unregistered, so the registration is not repeated)."""
    return len(jobs) == 1 and jobs[0].dedup is None and jobs[0].queue in known_queues


def insert_alone(conn: sqlite3.Connection, new: NewJob, at: float) -> InsertResult | None:
    """Insert ``new`` with one statement, outside any transaction (the statement is one, and
    waits for the write lock in the busy handler); None when its id is taken: the caller then
    runs :func:`insert_statements`, which reports the duplicate with the existing job's state
    read in the same transaction."""
    if conn.execute(Q["job_insert_one"], job_args(new, at)).fetchall():
        return InsertResult(new.id, InsertStatus.INSERTED, placement(new, at)[1])
    return None


def on_connection(jobs: Sequence[NewJob], at: float, path: str) -> Plan[list[InsertResult]]:
    """:func:`insert_statements` for the caller's connection: first make sure that connection's
    main database is the queue's file ``path``, so that a job can never land in another file."""
    databases = yield Statement(Q["job_insert_many__database_list"], {})
    check_same_file(databases, path)
    return (yield from insert_statements(jobs, at))


def check_same_file(databases: list[Row], path: str) -> None:
    """Raise :class:`InvalidArgument` unless ``PRAGMA database_list`` says that the main
    database is the file at ``path``."""
    main = next((os.fsdecode(row[2] or "") for row in databases if row[1] == "main"), "")
    wanted = os.path.realpath(path)
    if not main:
        raise InvalidArgument(
            "connection= is a connection to an in-memory or temporary SQLite database, not to "
            f"this queue's file {wanted}; connect to that file (sqlite3.connect({wanted!r}))"
        )
    if os.path.realpath(main) != wanted:
        raise InvalidArgument(
            f"connection= is a connection to SQLite database {main}, not to this queue's file "
            f"{wanted}; a job can only be written in a transaction on the queue's own database"
        )
