"""The SQLite fetch: one write transaction that promotes due jobs, picks what to lease among
plain and grouped jobs, and leases it. The write lock serializes fetchers, so two connections
can never lease the same job.

The write lock is SQLite's one lock for the whole file: while a fetch holds it, every producer
waits. So the fetch holds it for as few statements as it can. A read without the lock first
tells whether anything may be taken at all (an idle worker polling never takes the lock to find
nothing); the write transaction then leases with one statement that returns no rows, the tokens
made here; the leased rows are read after the commit, outside the lock. Each statement is one
round of releasing and taking back the GIL on this thread: under a busy event loop each costs
up to the interpreter's switch interval, with the lock held. Lease extension is one statement,
its own transaction (see ``_connection.one_statement``), the outcome read after the commit.
"""

from __future__ import annotations

import heapq
import json
import secrets
import sqlite3
from collections.abc import Iterator, Sequence

from conveyor.backends.sqlite import _groups as groups
from conveyor.backends.sqlite import _rates as rates
from conveyor.backends.sqlite._connection import one_statement, transaction
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.backends.sqlite._statements import Candidate, fetch_candidates, rows_of
from conveyor.drivers.common import first_in_run_order, resolve_now
from conveyor.drivers.groups import split_limit
from conveyor.drivers.records import ExtendResult, FetchParams, Lease, RateLimit


def fetch(
    conn: sqlite3.Connection,
    params: FetchParams,
    limits: list[RateLimit],
    now: float | None,
) -> list[sqlite3.Row]:
    """Lease up to ``params.limit`` jobs of the served queues; return their rows. Three steps
    on the connection's thread, one executor call: the read-only check, the write, the read.

    The common case, one queue holding only plain queued jobs for a worker that serves every
    name, under no rate limit, with nothing due to promote, leases with one statement run as its
    own transaction (see ``_connection.one_statement``); anything else takes the full step."""
    at = resolve_now(now)
    found = probe(conn, params.queues, at)
    if not any(any(flags) for flags in found.values()):
        return []
    if (
        len(found) == 1
        and params.names is None
        and not limits
        and next(iter(found.values())) == (True, False, False)
    ):
        return _fetch_plain(conn, next(iter(found)), params, at)
    leased = transaction(conn, lambda c: fetch_step(c, params, limits, now), kind="fetch")
    return leased_rows(conn, leased) if leased else []


def probe(
    conn: sqlite3.Connection, queues: Sequence[str], now: float
) -> dict[str, tuple[bool, bool, bool]]:
    """For each served queue that is not paused: whether it holds a queued plain job, a group
    whose turn has come, a scheduled or retrying job due at ``now``. Read without the write
    lock: an idle worker polling never takes it to find nothing. A true answer may still lease
    nothing (names, rate limits); a false one is certain for that snapshot (what commits later
    wakes the listener, which fetches again)."""
    paused = {row["name"] for row in rows_of(conn, "job_fetch__paused", {})}
    found: dict[str, tuple[bool, bool, bool]] = {}
    for queue in dict.fromkeys(queues):
        if queue not in paused:
            row = rows_of(conn, "job_fetch__probe", {"queue": queue, "now": now})[0]
            found[queue] = (bool(row["plain"]), bool(row["grouped"]), bool(row["due"]))
    return found


def _fetch_plain(
    conn: sqlite3.Connection, queue: str, params: FetchParams, at: float
) -> list[sqlite3.Row]:
    """Lease the first ``params.limit`` queued plain jobs of ``queue`` in one statement, then
    read them back: their tokens begin with a prefix made for this fetch, and their lease ends
    at a time only this fetch wrote, so the read is one range of the lease index."""
    prefix = secrets.token_hex(8)
    args = {
        "queue": queue,
        "limit": params.limit,
        "now": at,
        "expires_at": at + params.lease_seconds,
        "worker_id": params.worker_id,
        "prefix": prefix,
    }
    one_statement(conn, lambda c: c.execute(Q["job_fetch__plain"], args), "fetch")
    rows = rows_of(conn, "job_fetch__plain_leased", args)
    return sorted(rows, key=lambda row: (row["priority"], row["run_at"], row["seq"]))


Leased = list[tuple[str, str]]  # (job id, lease token) in the order chosen


def fetch_step(
    conn: sqlite3.Connection,
    params: FetchParams,
    limits: list[RateLimit],
    now: float | None,
) -> Leased:
    """Lease up to ``params.limit`` jobs of the served queues; return their ids and tokens in
    the order chosen (read :func:`leased_rows` after the commit)."""
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
        chosen = _share(eligible, plain, rooms, params.limit, set(caps), conn, at)
    else:
        chosen = first_in_run_order(plain, params.limit)
    if not chosen:
        return []
    # Every candidate was read under this lock, so each is queued and the update leases all.
    tokens = {job_id: secrets.token_hex(16) for job_id, _ in chosen}
    args = {
        "tokens": json.dumps(tokens),
        "now": at,
        "lease_seconds": params.lease_seconds,
        "worker_id": params.worker_id,
    }
    conn.execute(Q["job_fetch"], args)
    if limits:
        rates.record(conn, logs, limits, (queue for _, queue in chosen), at)
    return [(job_id, tokens[job_id]) for job_id, _ in chosen]


def leased_rows(conn: sqlite3.Connection, leased: Leased) -> list[sqlite3.Row]:
    """The rows of the jobs a committed :func:`fetch_step` leased, in its order. A job whose
    token is no longer the one written (deleted or taken away in the moment since) is left
    out: it is not this worker's to run."""
    token_of = dict(leased)
    rows = rows_of(conn, "job_get_many", {"ids": json.dumps(list(token_of))})
    found = {row["id"]: row for row in rows if row["lease_token"] == token_of[row["id"]]}
    return [found[job_id] for job_id, _ in leased if job_id in found]


def _share(
    eligible: list[groups.Group],
    plain: list[tuple[tuple[int, float, int], tuple[str, str]]],
    rooms: dict[str, int],
    limit: int,
    capped: set[str],
    conn: sqlite3.Connection,
    at: float,
) -> list[tuple[str, str]]:
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
    ids: list[tuple[str, str]] = []
    for _, (job_id, queue) in sorted(plain, key=lambda c: c[0]):
        if len(first) + len(ids) >= limit:
            break
        if rooms[queue] > 0:
            rooms[queue] -= 1
            ids.append((job_id, queue))
    then = dealer.deal(limit - len(first) - len(ids))
    jobs = {gid: iter(found) for gid, found in groups.serve(conn, eligible, at).items()}
    # In the order they were chosen: each round of groups in turn order, plain jobs between.
    dealt = [_dealt(jobs, g) for g in first]
    dealt_then = [_dealt(jobs, g) for g in then]
    return [chosen for chosen in (*dealt, *ids, *dealt_then) if chosen is not None]


def _dealt(
    jobs: dict[tuple[str, str], Iterator[str]], group: groups.Group
) -> tuple[str, str] | None:
    job_id = next(jobs[(group.queue, group.key)], None)
    return None if job_id is None else (job_id, group.queue)


def extend_leases(
    conn: sqlite3.Connection, leases: Sequence[Lease], expires_at: float
) -> ExtendResult:
    """Extend the leases still held, in one statement under the write lock; then read, after
    the commit, which are held and which of those are asked to cancel. A job active with the
    token after the commit was so at the update (a token is written once, by the fetch that
    leases, and taken away for good), so it was extended; any other was lost, before or just
    after."""
    batch = json.dumps([[lease.job_id, lease.token, int(lease.isolated)] for lease in leases])
    args = {"leases": batch, "expires_at": expires_at}
    one_statement(conn, lambda c: c.execute(Q["job_extend_leases"], args), "extend")
    ids = json.dumps([lease.job_id for lease in leases])
    now = {row["id"]: row for row in rows_of(conn, "job_extend_leases__held", {"ids": ids})}
    lost: list[str] = []
    cancel: list[str] = []
    for lease in leases:
        row = now.get(lease.job_id)
        if row is None or row["state"] != "active" or row["lease_token"] != lease.token:
            lost.append(lease.job_id)
        elif row["cancel_requested"]:
            cancel.append(lease.job_id)
    return ExtendResult(tuple(lost), tuple(cancel))
