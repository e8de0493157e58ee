"""Rate limits in PostgreSQL: each limited queue's sliding log of start times and the time it is
blocked until, one row of ``conveyor_rate_limit`` per queue (see :mod:`conveyor.drivers.rates`).

A fetch of rate-limited queues is one transaction on one connection: lock the queues' rows
(``rate_limit__lock``, which also reads the clock once the lock is held), work out how many
jobs each may start, lease them (``job_fetch__rate_limited``, the fetch statement with a cap
per queue), and log their starts (``rate_limit__log``). Fetches of one rate-limited queue take
turns on its row; fetches of other queues never touch it, so the plain fetch keeps its one
statement and its plans.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from conveyor.backends.postgres._groups import fetch_grouped, groups_waiting, leased_rows
from conveyor.backends.postgres._records import Row
from conveyor.drivers.common import check_now, check_rate_limits, check_rate_seconds
from conveyor.drivers.rates import allowed, wait_seconds
from conveyor.drivers.records import RateLimit

Run = Callable[[Any, str, Mapping[str, Any]], Awaitable[list[Row]]]


async def fetch_limited(
    conn: Any, run: Run, args: Mapping[str, Any], queues: Sequence[str], limits: Sequence[RateLimit]
) -> list[Row]:
    """Lease what the limits allow, in one transaction (``args`` as for ``job_fetch``)."""
    async with conn.transaction():
        locked = await run(
            conn, "rate_limit__lock", {"queues": [r.queue for r in limits], "now": args["now"]}
        )
        logs = {row["queue"]: row for row in locked}
        now = float(locked[0]["now"])
        limit = int(args["limit"])
        caps = {
            r.queue: allowed(
                logs[r.queue]["starts"], r.count, r.per, logs[r.queue]["blocked_until"], now
            )
            for r in limits
        }
        # Run even when the limits allow no start: the fetch promotes the served queues' due
        # jobs first, whatever it then leases (the contract of job_fetch).
        rows = await run(
            conn,
            "job_fetch__rate_limited",
            {
                **args,
                "now": now,
                "queues": list(queues),
                "caps": [min(caps.get(queue, limit), limit) for queue in queues],
            },
        )
        if groups_waiting(rows):  # grouped and plain starts share the caps
            leased = await fetch_grouped(conn, run, args, queues, rows[0], caps=caps)
        else:
            leased = sorted(leased_rows(rows), key=lambda r: (r["priority"], r["run_at"], r["seq"]))
        started: dict[str, int] = {}
        for row in leased:
            started[row["queue"]] = started.get(row["queue"], 0) + 1
        for r in limits:
            if started.get(r.queue):
                starts = logs[r.queue]["starts"]
                at = max(now, starts[-1]) if starts else now
                log = {"queue": r.queue, "at": at, "started": started[r.queue], "count": r.count}
                await run(conn, "rate_limit__log", log)
        return leased


def waits(rows: Sequence[Row], limits: Sequence[RateLimit]) -> dict[str, float]:
    by_queue = {row["queue"]: row for row in rows}
    found: dict[str, float] = {}
    for r in limits:
        row = by_queue.get(r.queue)
        if row is None:
            continue
        now = float(row["now"])
        wait = wait_seconds(row["starts"], r.count, r.per, row["blocked_until"], now)
        if wait is not None:
            found[r.queue] = wait
    return found


class RateLimitOperations:
    """The rate-limit operations of :class:`~conveyor.backends.postgres.driver.PostgresDriver`."""

    _rows: Callable[[str, Mapping[str, Any]], Awaitable[list[Row]]]

    async def rate_limit_block(
        self, queue: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_rate_seconds(seconds, f"block of queue {queue!r}")
        await self._rows("rate_limit_block", {"queue": queue, "seconds": seconds, "now": now})

    async def rate_limit_wait(
        self, limits: Sequence[RateLimit], *, now: float | None = None
    ) -> dict[str, float]:
        check_now(now)
        check_rate_limits(limits)
        if not limits:
            return {}
        rows = await self._rows(
            "rate_limit_wait", {"queues": [r.queue for r in limits], "now": now}
        )
        return waits(rows, limits)
