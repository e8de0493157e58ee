"""The SQLite fetch: one write transaction that promotes due jobs, picks what to lease among
plain and grouped jobs, and leases it. The write lock serializes fetchers, so two connections
can never lease the same job."""

from __future__ import annotations

import heapq
import json
import secrets
import sqlite3

from conveyor.backends.sqlite import _groups as groups
from conveyor.backends.sqlite import _rates as rates
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.backends.sqlite._statements import Candidate, fetch_candidates, rows_of
from conveyor.drivers.common import first_in_run_order, resolve_now
from conveyor.drivers.groups import split_limit
from conveyor.drivers.records import FetchParams, RateLimit


def fetch_step(
    conn: sqlite3.Connection,
    params: FetchParams,
    limits: list[RateLimit],
    now: float | None,
) -> list[sqlite3.Row]:
    """Lease up to ``params.limit`` jobs of the served queues; return their rows."""
    # The clock is read once the write lock is held: the starts a rate limit logs are then in
    # the order the fetches ran.
    at = resolve_now(now)
    unknown_before = None if params.unknown_after is None else at - params.unknown_after
    paused = {row["name"] for row in rows_of(conn, "job_fetch__paused", {})}
    # Each limited queue offers no more than its limit allows: the overall first ``limit`` of
    # the offers then respects every limit.
    logs = rates.read(conn, limits) if limits else {}
    caps = rates.caps(logs, limits, at)
    rooms: dict[str, int] = {}
    plain: list[tuple[tuple[int, float, int], tuple[str, str]]] = []
    eligible: list[groups.Group] = []
    for queue in dict.fromkeys(params.queues):
        if queue in paused:
            continue
        conn.execute(Q["job_fetch__promote"], {"queue": queue, "now": at})
        room = min(params.limit, caps.get(queue, params.limit))
        if room <= 0:
            continue
        rooms[queue] = room
        # A queue without groups costs this one probe of an empty index range.
        eligible += groups.eligible(conn, queue, room, params.names, at)
        # Up to ``room`` per name lookup, plus long-waiting unknown names: only the first
        # ``room`` of them may start.
        offered: list[Candidate] = fetch_candidates(conn, queue, room, params.names, unknown_before)
        plain += [(order, (job_id, queue)) for order, job_id in heapq.nsmallest(room, offered)]
    if eligible:
        ids = _share(eligible, plain, rooms, params.limit, set(caps), conn, at)
    else:
        ids = [job_id for job_id, _ in first_in_run_order(plain, params.limit)]
    if not ids:
        return []
    args = {
        "ids": json.dumps(ids),
        "now": at,
        "lease_seconds": params.lease_seconds,
        "worker_id": params.worker_id,
    }
    leased = rows_of(conn, "job_fetch", args)
    if limits:
        rates.record(conn, logs, limits, (row["queue"] for row in leased), at)
    # RETURNING yields rows in no promised order; they go back in the order chosen (plain jobs
    # in run order, grouped ones round by round).
    position = {job_id: i for i, job_id in enumerate(ids)}
    return sorted(leased, key=lambda row: position[row["id"]])


def _share(
    eligible: list[groups.Group],
    plain: list[tuple[tuple[int, float, int], tuple[str, str]]],
    rooms: dict[str, int],
    limit: int,
    capped: set[str],
    conn: sqlite3.Connection,
    at: float,
) -> list[str]:
    """Grouped jobs round-robin up to their share (``split_limit``), then plain jobs in run
    order, then grouped jobs again for what the plain ones left; each queue starts no more than
    its ``rooms``."""
    # What may start is shared, not what was asked for: under queue rate limits, the limits'
    # allowance is split, or groups would take all of it and plain jobs none.
    present = {queue for _, (_, queue) in plain} | {group.queue for group in eligible}
    budget = limit
    if present <= capped:
        budget = min(limit, sum(rooms[queue] for queue in present))
    # With one start to give and both kinds runnable, a fair coin picks the side.
    coin = budget == 1 and bool(plain) and secrets.randbits(1) == 1
    dealer = groups.Dealer(eligible, rooms)
    first = dealer.deal(split_limit(budget, True, bool(plain), coin) if budget > 0 else 0)
    ids: list[str] = []
    for _, (job_id, queue) in sorted(plain, key=lambda c: c[0]):
        if len(first) + len(ids) >= limit:
            break
        if rooms[queue] > 0:
            rooms[queue] -= 1
            ids.append(job_id)
    then = dealer.deal(limit - len(first) - len(ids))
    jobs = {gid: iter(found) for gid, found in groups.serve(conn, eligible, at).items()}
    # In the order they were chosen: each round of groups in turn order, plain jobs between.
    dealt = [next(jobs[(g.queue, g.key)], None) for g in first]
    dealt_then = [next(jobs[(g.queue, g.key)], None) for g in then]
    return [job_id for job_id in (*dealt, *ids, *dealt_then) if job_id is not None]
