"""The SQLite driver's deletion of finished jobs and its per-minute throughput counters
(``conveyor_stats``, see ``migrations/0008_headers_stats.sql``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from importlib import resources
from typing import Final

from conveyor.backends.sqlite._connection import Connection
from conveyor.backends.sqlite._sql import parse_queries
from conveyor.backends.sqlite._statements import state_of
from conveyor.drivers.common import (
    STATS_KEEP_MINUTES,
    check_ids,
    check_now,
    check_stats,
    resolve_now,
)
from conveyor.drivers.records import TERMINAL_STATES, ChangeResult, ChangeStatus, QueueStats

Q: Final = parse_queries(
    resources.files("conveyor.backends.sqlite").joinpath("inspect.sql").read_text(encoding="utf-8")
)

# How many expired buckets one ``stats_add`` deletes beyond one per sample it carries: an add
# creates at most one bucket per sample, so the expired ones never pile up, and a backlog
# (a file that was idle for hours) drains over a few adds instead of in one long write.
EXPIRE_PER_ADD: Final = 100


class InspectOperations:
    """``job_delete_many``, ``stats_add`` and ``stats_read`` of
    :class:`~conveyor.backends.sqlite.driver.SQLiteDriver`."""

    _db: Connection

    async def job_delete_many(self, ids: Sequence[str]) -> list[ChangeResult]:
        check_ids(ids)
        if not ids:
            return []
        return await self._db.write(lambda conn: _delete_many(conn, ids))

    async def stats_add(self, samples: Sequence[QueueStats], *, now: float | None = None) -> None:
        check_now(now)
        check_stats(samples)
        oldest = int(resolve_now(now) // 60) - STATS_KEEP_MINUTES

        def step(conn: sqlite3.Connection) -> None:
            for sample in samples:
                args = {
                    "queue": sample.queue,
                    "minute": sample.minute,
                    "completed": sample.completed,
                    "retried": sample.retried,
                    "failed": sample.failed,
                }
                conn.execute(Q["stats_add"], args)
            limit = len(samples) + EXPIRE_PER_ADD
            conn.execute(Q["stats_add__expire"], {"oldest": oldest, "limit": limit})

        await self._db.write(step)

    async def stats_read(
        self, queues: Sequence[str] | None, *, since_minute: int
    ) -> list[QueueStats]:
        def step(conn: sqlite3.Connection) -> list[QueueStats]:
            if queues is None:
                names = [row["queue"] for row in conn.execute(Q["stats_read__queues"])]
            else:
                names = sorted(set(queues))
            found: list[QueueStats] = []
            for queue in names:
                args = {"queue": queue, "since_minute": since_minute, "limit": STATS_KEEP_MINUTES}
                rows = conn.execute(Q["stats_read"], args).fetchall()
                found += (
                    QueueStats(
                        queue=row["queue"],
                        minute=row["minute"],
                        completed=row["completed"],
                        retried=row["retried"],
                        failed=row["failed"],
                    )
                    for row in reversed(rows)
                )
            return found

        return await self._db.read(step)


def _delete_many(conn: sqlite3.Connection, ids: Sequence[str]) -> list[ChangeResult]:
    results: list[ChangeResult] = []
    for job_id in ids:
        state = state_of(conn, job_id)
        if state is None:
            results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
        elif state not in TERMINAL_STATES:
            results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, state))
        else:
            conn.execute(Q["job_delete_many"], {"id": job_id})
            results.append(ChangeResult(job_id, ChangeStatus.OK, None))
    return results
