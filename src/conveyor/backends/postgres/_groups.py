"""Groups in PostgreSQL (see :mod:`conveyor.drivers.groups`): one record per group of a queue in
``conveyor_group`` (migrations/0006_groups.sql), and the statements of ``groups.sql``. Every
statement that moves grouped jobs into or out of ``queued`` or ``active`` updates their groups'
counts in the same statement, once per group however many of its jobs move (a row trigger would
rewrite a group's record once per job: a batch of 5,000 jobs of one group took seconds).

The plain fetch statement probes first whether a served queue has an eligible group or a
grouped job due (two lookups of partial indexes that stay empty in a queue without groups); if
not, it leases as it always did, in the same round trip. If so, it leases nothing and says so,
and :func:`fetch_grouped` serves the fetch: promote the due grouped jobs, then, as
:func:`~conveyor.drivers.groups.split_limit` shares the limit, grouped jobs round-robin
(``job_fetch__grouped``), plain jobs, and grouped jobs again for what the plain ones left.

Locks: a statement takes its job rows first, then the group records it counts in (queue, key)
order; the grouped fetch takes group records, then their jobs, with SKIP LOCKED and never
waits. So two statements that share groups wait for each other instead of deadlocking. A
caller's transaction that enqueues a grouped job holds its group's record until it commits:
finishes of that group's jobs wait for it, fetches pass the group over meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from conveyor._errors import InvalidArgument
from conveyor.backends.postgres._records import Row
from conveyor.drivers.common import check_now, check_rate_seconds
from conveyor.drivers.groups import GROUP_KEY_CHARS, split_limit
from conveyor.drivers.records import NewJob

Run = Callable[[Any, str, Mapping[str, Any]], Awaitable[list[Row]]]


def groups_waiting(rows: Sequence[Row]) -> bool:
    """Whether a plain fetch statement found grouped work and so leased nothing (its one row
    then carries what :func:`fetch_grouped` needs)."""
    return bool(rows) and bool(rows[0].get("groups_waiting"))


def leased_rows(rows: Sequence[Row]) -> list[Row]:
    """The jobs a fetch statement leased (without the row it returns when it leased none)."""
    return [row for row in rows if row["id"] is not None]


async def fetch_grouped(
    conn: Any,
    run: Run,
    args: Mapping[str, Any],
    queues: Sequence[str],
    probe: Row,
    *,
    caps: Mapping[str, int] | None = None,
) -> list[Row]:
    """Serve a fetch whose queues have grouped work (``probe``: the row of the plain statement
    that found it), at the instant it probed, and return its jobs in the order served.
    ``caps``: what each rate-limited queue may still start (the fetch then runs in the
    transaction holding their logs)."""
    now = float(probe["fetched_at"])
    limit = int(args["limit"])
    room = {queue: limit if caps is None else caps.get(queue, limit) for queue in queues}
    # Under queue rate limits what may start is shared, not what was asked for: split the
    # allowance, or groups would take all of it and plain jobs none (the reference counts
    # only the queues that hold jobs; a capped queue without any is counted here too).
    budget = limit
    if caps is not None and all(queue in caps for queue in queues):
        budget = min(limit, sum(max(room[queue], 0) for queue in queues))
    if probe["groups_due"]:
        await run(conn, "job_fetch__group_promote", {"now": now, "queues": list(queues)})
    plain_ready = bool(probe["plain_waiting"])
    # A fair bit of the fetch's own randomness: the last hex digit of its receipt.
    coin = int(str(args["receipt"])[-1], 16) % 2 == 1
    # A due job promoted just now may wait in a full group: counting groups ready when none
    # is changes nothing, as the plain jobs take whatever the groups leave.
    first = split_limit(budget, True, plain_ready, coin) if budget > 0 else 0
    leased: list[Row] = []

    async def serve(count: int) -> list[Row]:
        if count <= 0 or not any(room[q] > 0 for q in queues):
            return []
        rows = await run(
            conn,
            "job_fetch__grouped",
            {
                **args,
                "now": now,
                "limit": count,
                "queues": list(queues),
                "caps": [min(room[q], count) for q in queues],
            },
        )
        _spend(room, rows)
        return rows

    grouped = await serve(first)
    leased += grouped
    if plain_ready and len(leased) < limit:
        left = limit - len(leased)
        plain_args = {**args, "now": now, "limit": left, "probe": False}
        if caps is None:
            plain = leased_rows(await run(conn, "job_fetch", plain_args))
        else:
            capped = [min(room[q], left) for q in queues]
            rows = await run(conn, "job_fetch__rate_limited", {**plain_args, "caps": capped})
            plain = leased_rows(rows)
        _spend(room, plain)
        # Plain jobs in run order, as the plain fetch gives them; grouped ones as served.
        leased += sorted(plain, key=lambda r: (r["priority"], r["run_at"], r["seq"]))
    if len(grouped) == first and len(leased) < limit:
        leased += await serve(limit - len(leased))
    return leased


def _spend(room: dict[str, int], rows: Sequence[Row]) -> None:
    for row in rows:
        room[row["queue"]] = room.get(row["queue"], 0) - 1


def group_lock_args(jobs: Sequence[NewJob], now: float | None) -> dict[str, Any] | None:
    """What ``job_insert_many__group_lock`` needs to create or lock the groups of ``jobs`` in
    order (None: the batch has none)."""
    grouped = [job for job in jobs if job.group is not None]
    if not grouped:
        return None
    return {
        "now": now,
        "queues": [job.queue for job in grouped],
        "keys": [job.group.key for job in grouped if job.group is not None],
        "names": [job.name for job in grouped],
        "concurrencies": [job.group.concurrency for job in grouped if job.group is not None],
        "rate_counts": [job.group.rate_count for job in grouped if job.group is not None],
        "rate_pers": [float(job.group.rate_per) for job in grouped if job.group is not None],
    }


def group_columns(job: NewJob) -> dict[str, Any]:
    """A job's group as the columns of its row (all None for a plain job)."""
    group = job.group
    return {
        "group_key": None if group is None else group.key,
        "group_concurrency": None if group is None else group.concurrency,
        "group_rate_count": None if group is None else group.rate_count,
        "group_rate_per": None if group is None else float(group.rate_per),
    }


def check_group_key(queue: str, group: object) -> None:
    if not isinstance(group, str) or not 1 <= len(group) <= GROUP_KEY_CHARS or "\x00" in group:
        raise InvalidArgument(
            f"group of queue {queue!r} must be text of 1 to {GROUP_KEY_CHARS} characters "
            f"without NUL, got {group!r}"
        )


class GroupOperations:
    """The group operations of :class:`~conveyor.backends.postgres.driver.PostgresDriver`."""

    _rows: Callable[[str, Mapping[str, Any]], Awaitable[list[Row]]]

    async def group_block(
        self, queue: str, group: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_group_key(queue, group)
        check_rate_seconds(seconds, f"block of group {group!r} of queue {queue!r}")
        await self._rows(
            "group_block", {"queue": queue, "key": group, "seconds": float(seconds), "now": now}
        )

    async def group_wait(
        self,
        queues: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        now: float | None = None,
    ) -> float | None:
        check_now(now)
        if not queues:
            return None
        args = {
            "queues": list(dict.fromkeys(queues)),
            "names": None if names is None else list(names),
            "now": now,
        }
        rows = await self._rows("group_wait", args)
        if not rows or rows[0]["wait"] is None:
            return None
        return float(rows[0]["wait"])
