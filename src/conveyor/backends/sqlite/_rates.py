"""Rate limits in SQLite: each limited queue's sliding log of start times (a JSON array) and
the time it is blocked until, in ``conveyor_rate_limit``, read and written inside the fetch's
write transaction (see :mod:`conveyor.drivers.rates`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from conveyor.backends.sqlite._connection import Connection
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.backends.sqlite._statements import rows_of
from conveyor.drivers.common import check_now, check_rate_limits, check_rate_seconds, resolve_now
from conveyor.drivers.rates import allowed, logged, wait_seconds
from conveyor.drivers.records import RateLimit

Logs = dict[str, tuple[list[float], float | None]]  # queue -> (starts, blocked_until)


def read(conn: sqlite3.Connection, limits: Sequence[RateLimit]) -> Logs:
    queues = json.dumps([limit.queue for limit in limits])
    return {
        row["queue"]: ([float(at) for at in json.loads(row["starts"])], row["blocked_until"])
        for row in rows_of(conn, "rate_limit__read", {"queues": queues})
    }


def caps(logs: Logs, limits: Sequence[RateLimit], now: float) -> dict[str, int]:
    """How many jobs each limited queue may start at ``now``."""
    found: dict[str, int] = {}
    for limit in limits:
        starts, blocked_until = logs.get(limit.queue, ([], None))
        found[limit.queue] = allowed(starts, limit.count, limit.per, blocked_until, now)
    return found


def record(
    conn: sqlite3.Connection,
    logs: Logs,
    limits: Sequence[RateLimit],
    leased_queues: Iterable[str],
    now: float,
) -> None:
    """Log the starts of the jobs just leased (one queue name per job)."""
    started: dict[str, int] = {}
    for queue in leased_queues:
        started[queue] = started.get(queue, 0) + 1
    for limit in limits:
        if not started.get(limit.queue):
            continue
        starts = logged(
            logs.get(limit.queue, ([], None))[0], limit.count, started[limit.queue], now
        )
        conn.execute(Q["rate_limit__log"], {"queue": limit.queue, "starts": json.dumps(starts)})


def waits(logs: Logs, limits: Sequence[RateLimit], now: float) -> dict[str, float]:
    found: dict[str, float] = {}
    for limit in limits:
        starts, blocked_until = logs.get(limit.queue, ([], None))
        wait = wait_seconds(starts, limit.count, limit.per, blocked_until, now)
        if wait is not None:
            found[limit.queue] = wait
    return found


class RateLimitOperations:
    """The rate-limit operations of :class:`~conveyor.backends.sqlite.driver.SQLiteDriver`."""

    _db: Connection

    async def rate_limit_block(
        self, queue: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_rate_seconds(seconds, f"block of queue {queue!r}")
        args = {"queue": queue, "until": resolve_now(now) + seconds}
        await self._db.write(lambda conn: rows_of(conn, "rate_limit_block", args))

    async def rate_limit_wait(
        self, limits: Sequence[RateLimit], *, now: float | None = None
    ) -> dict[str, float]:
        check_now(now)
        check_rate_limits(limits)
        at = resolve_now(now)
        if not limits:
            return {}
        return await self._db.read(lambda conn: waits(read(conn, limits), limits, at))
