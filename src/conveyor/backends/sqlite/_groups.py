"""Groups in SQLite: per-key concurrency, rate limits and fair serving (see
:mod:`conveyor.drivers.groups`; queries in ``groups.sql``).

The triggers of ``migrations/0007_groups.sql`` keep each group record's queued and active
counts whatever statement changes a grouped job's state: an insert makes the record if missing
and gives it the job's limits, and a job queued again (promoted, retried, rescued, handed back)
remakes a record pruned while idle. The dealing of a fetch follows the memory driver's
reference, except that the grouped starts after the plain ones continue the round where the
first ones stopped. What is left here runs inside the
fetch's write transaction: reading the groups whose turn has come from a partial index that
holds only groups with queued jobs and room (so a fetch reads about as many groups as it may
serve), dealing the fetch's starts among them one per group per round, reading each served
group's first jobs, and writing each served group's log and next turn.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, cast

from conveyor._errors import InvalidArgument
from conveyor.backends.sqlite._connection import Connection
from conveyor.backends.sqlite._sql import QUERIES, parse_queries
from conveyor.backends.sqlite._statements import HEAD_ROWS_MIN, HEAD_ROWS_PER_JOB
from conveyor.drivers.common import check_now, check_rate_seconds, resolve_now
from conveyor.drivers.groups import GROUP_KEY_CHARS, group_turn
from conveyor.drivers.rates import allowance, allowed, logged
from conveyor.drivers.records import NewJob

Q: Final = parse_queries(
    resources.files("conveyor.backends.sqlite").joinpath("groups.sql").read_text(encoding="utf-8")
)


def _rows(conn: sqlite3.Connection, query: str, args: dict[str, Any]) -> list[sqlite3.Row]:
    return conn.execute(Q[query], args).fetchall()


@dataclass(slots=True)
class Group:
    """A group whose turn has come, as a fetch read it, and what the fetch deals it."""

    queue: str
    key: str
    turn: float
    rate_count: int
    rate_per: float
    starts: list[float]
    blocked_until: float | None
    room: int  # how many jobs it may start now: queued, concurrency and rate allowing
    taken: int = 0

    @property
    def order(self) -> tuple[float, str, str]:
        return (self.turn, self.key, self.queue)


def _group_of(row: sqlite3.Row, now: float) -> Group:
    starts = _starts_of(row["starts"])
    rate_count, rate_per = row["rate_count"], float(row["rate_per"])
    blocked_until = row["blocked_until"]
    room: int = row["queued"]
    if row["concurrency"]:
        room = min(room, row["concurrency"] - row["active"])
    if rate_count:
        room = min(room, allowed(starts, rate_count, rate_per, blocked_until, now))
    elif blocked_until is not None and blocked_until > now:
        room = 0
    return Group(
        queue=row["queue"],
        key=row["key"],
        turn=float(row["turn"]),
        rate_count=rate_count,
        rate_per=rate_per,
        starts=starts,
        blocked_until=blocked_until,
        room=max(room, 0),
    )


def _starts_of(text: object) -> list[float]:
    # A log that is not a JSON array of numbers (written by hand) counts as empty rather than
    # failing every fetch of the queue.
    try:
        starts: object = json.loads(text) if isinstance(text, str) else []
        if not isinstance(starts, list):
            return []
        return [float(cast(float, at)) for at in cast(list[object], starts)]
    except (ValueError, TypeError):
        return []


def eligible(
    conn: sqlite3.Connection,
    queue: str,
    limit: int,
    names: tuple[str, ...] | None,
    now: float,
) -> list[Group]:
    """The first ``limit`` groups of ``queue`` (of ``names``, when given) that may start a job
    at ``now``, in turn order: in a round of one job per group, no fetch of ``limit`` jobs
    serves more. A queue without groups costs one empty index probe."""
    args = {"queue": queue, "now": now}
    if names is None:
        rows = _rows(conn, "group_fetch__head", {**args, "limit": limit})
    else:
        # As for plain jobs: the head of the index filtered here, and one range per name only
        # when groups of other names fill that head.
        wanted = set(names)
        head = max(limit * HEAD_ROWS_PER_JOB, HEAD_ROWS_MIN)
        read = _rows(conn, "group_fetch__head", {**args, "limit": head})
        rows = [row for row in read if row["name"] in wanted]
        if len(rows) < limit and len(read) >= head:
            found = {row["key"]: row for row in rows}
            for name in wanted:
                named = _rows(conn, "group_fetch__named", {**args, "name": name, "limit": limit})
                found.update((row["key"], row) for row in named)
            rows = sorted(found.values(), key=lambda row: (row["turn"], row["key"]))
        rows = rows[:limit]
    groups: list[Group] = []
    for row in rows:
        group = _group_of(row, now)
        if group.room > 0:
            groups.append(group)
        else:
            # Its turn came but its log or block holds it (its limits changed since it was
            # last served): its turn moves to when it frees, so it stops taking a place here.
            _write_turn(conn, group, group.starts, group.turn, now)
    return groups


class Dealer:
    """Deals a fetch's starts among groups in turn order, one per group per round, never more
    than a group's room nor than its queue's ``rooms`` (what a queue rate limit leaves). It
    keeps its place between calls: the grouped starts that follow the plain ones continue the
    round where the first ones stopped."""

    def __init__(self, groups: Sequence[Group], rooms: dict[str, int]) -> None:
        self._groups = sorted(groups, key=lambda group: group.order)
        self._rooms = rooms
        self._next = 0

    def deal(self, budget: int) -> list[Group]:
        """Deal up to ``budget`` more starts; return the groups dealt one, in dealing order."""
        dealt: list[Group] = []
        skipped = 0
        count = len(self._groups)
        # Stops after a whole round in which no group could take one.
        while len(dealt) < budget and skipped < count:
            group = self._groups[self._next]
            self._next = (self._next + 1) % count
            if group.taken < group.room and self._rooms[group.queue] > 0:
                group.taken += 1
                self._rooms[group.queue] -= 1
                dealt.append(group)
                skipped = 0
            else:
                skipped += 1
        return dealt


def serve(
    conn: sqlite3.Connection, groups: Sequence[Group], now: float
) -> dict[tuple[str, str], list[str]]:
    """Read the jobs dealt to each group (its first ones in run order) and write each served
    group's log and next turn; return each served group's job ids, by (queue, key)."""
    found: dict[tuple[str, str], list[str]] = {}
    for group in groups:
        if not group.taken:
            continue
        args = {"queue": group.queue, "key": group.key, "limit": group.taken}
        jobs = [row["id"] for row in _rows(conn, "group_fetch__jobs", args)]
        found[(group.queue, group.key)] = jobs
        starts = group.starts
        if group.rate_count and jobs:
            starts = logged(starts, group.rate_count, len(jobs), now)
        _write_turn(conn, group, starts, now, now)
    return found


def _write_turn(
    conn: sqlite3.Connection, group: Group, starts: list[float], served_at: float, now: float
) -> None:
    """The group's turn, last served at ``served_at``: then, or, if later, when its log (full
    at ``now``) frees a place or its block ends; and when its log and block stop mattering."""
    free_at = None
    idle_until = group.blocked_until or 0.0
    if group.rate_count:
        recent = starts[-group.rate_count :]
        if allowance(recent, group.rate_count, group.rate_per, now) == 0:
            free_at = recent[0] + group.rate_per
        if recent:
            idle_until = max(idle_until, recent[-1] + group.rate_per)
    args = {
        "queue": group.queue,
        "key": group.key,
        "turn": group_turn(served_at, free_at, group.blocked_until),
        "starts": json.dumps(starts[-group.rate_count :] if group.rate_count else []),
        "idle_until": idle_until,
    }
    conn.execute(Q["group_fetch__served"], args)


def freed(conn: sqlite3.Connection, job: sqlite3.Row, now: float) -> bool:
    """Whether the group of ``job`` (a row with its ``queue`` and ``group_key``, which just left
    active) may start a job at ``now``: then listeners are woken as for an insert. Plain jobs
    cost nothing."""
    key = job["group_key"]
    if key is None:
        return False
    return bool(_rows(conn, "group__eligible", {"queue": job["queue"], "key": key, "now": now}))


def prune(conn: sqlite3.Connection, now: float, limit: int) -> int:
    """Delete at most ``limit`` idle group records whose log and block have passed."""
    if limit <= 0:
        return 0
    deleted: int = conn.execute(Q["group_prune"], {"now": now, "limit": limit}).rowcount
    return deleted


def group_args(new: NewJob) -> dict[str, object]:
    """The group columns of ``new``'s row. Each job carries its group's limits: the group
    takes them when the job is inserted, and a record pruned while idle is made again from
    them when the job is next queued."""
    group = new.group
    return {
        "group_key": None if group is None else group.key,
        "group_concurrency": 0 if group is None else group.concurrency,
        "group_rate_count": 0 if group is None else group.rate_count,
        "group_rate_per": 0.0 if group is None else float(group.rate_per),
    }


def check_group_key(queue: str, key: object) -> None:
    if not isinstance(key, str) or not 1 <= len(key) <= GROUP_KEY_CHARS or "\x00" in key:
        raise InvalidArgument(
            f"group of queue {queue!r} must be text of 1 to {GROUP_KEY_CHARS} characters "
            f"without NUL, got {key!r}"
        )


class GroupOperations:
    """The group operations of :class:`~conveyor.backends.sqlite.driver.SQLiteDriver`."""

    _db: Connection

    async def group_block(
        self, queue: str, group: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_group_key(queue, group)
        check_rate_seconds(seconds, f"block of group {group!r} of queue {queue!r}")
        args = {"queue": queue, "key": group, "until": resolve_now(now) + seconds}
        await self._db.write(lambda conn: conn.execute(Q["group_block"], args).rowcount)

    async def group_wait(
        self,
        queues: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        now: float | None = None,
    ) -> float | None:
        check_now(now)
        at = resolve_now(now)

        def step(conn: sqlite3.Connection) -> float | None:
            turns: list[float] = []
            paused = {row["name"] for row in conn.execute(QUERIES["job_fetch__paused"])}
            for queue in dict.fromkeys(q for q in queues if q not in paused):
                args = {"queue": queue, "now": at}
                if names is None:
                    turns += [row["turn"] for row in _rows(conn, "group_wait", args)]
                    continue
                for name in dict.fromkeys(names):
                    rows = _rows(conn, "group_wait__named", {**args, "name": name})
                    turns += [row["turn"] for row in rows]
            return min(turns) - at if turns else None

        return await self._db.read(step)
