"""Typed stubs over the Lua scripts and the few plain commands: the only module that knows the
KEYS order, ARGV layout and reply shapes (key names are in :mod:`._keys`).

The driver composes these into the driver contract; it never builds a key or reads a raw reply.
Every script of a queue receives the queue's keys in :data:`QUEUE_KEYS` order, so all of them
share one hash tag and one Redis Cluster slot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import NoScriptError

from conveyor.backends.redis._connection import Client
from conveyor.backends.redis._keys import QUEUE_KEYS, SEQ_DIGITS, STATE_SETS, Namespace, QueueKeys
from conveyor.backends.redis._lua import Script, load
from conveyor.backends.redis._records import JOB_FIELDS
from conveyor.backends.redis._resp import BlockingConnection, NoScript
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    FinishJob,
    JobState,
    NewJob,
    TransitionStatus,
    WorkerInfo,
)

# The KEYS each script is called with, by name, and whether more may follow: what the scripts'
# headers must declare (a test compares them).
SCRIPT_KEYS: Final[dict[str, tuple[tuple[str, ...], bool]]] = {
    "job_insert_many": (QUEUE_KEYS, True),
    "job_fetch": ((*QUEUE_KEYS, "receipt"), False),
    "job_extend_leases": (QUEUE_KEYS, False),
    "job_finish_many": (QUEUE_KEYS, False),
    "job_rescue_expired": (QUEUE_KEYS, False),
    "job_promote_due": (QUEUE_KEYS, False),
    "job_cancel_many": (QUEUE_KEYS, False),
    "job_retry_many": (QUEUE_KEYS, False),
    "job_purge": (QUEUE_KEYS, False),
    "job_prune_finished": (QUEUE_KEYS, False),
    "job_list": (QUEUE_KEYS, False),
    "queue_resume": (QUEUE_KEYS, False),
    "queue_notify": (QUEUE_KEYS, False),
    "worker_heartbeat": (("workers", "info", "order"), False),
    "leader_acquire": (("leader",), False),
    "leader_release": (("leader",), False),
}

_STATES: Final = {state.value.encode(): state for state in JobState}


async def run(client: Client, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` by SHA, sending its source only when the server does not know it."""
    try:
        return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except (NoScript, NoScriptError):
        return await client.execute_command("EVAL", script.source, len(keys), *keys, *args)


def _now(now: float | None) -> float | str:
    return "" if now is None else now


def _opt(value: str | bytes | float | None) -> bytes:
    """An optional argument: b'' for none, else '=' and the value (see common.lua ``opt``)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return b"=" + value
    if isinstance(value, str):
        return b"=" + value.encode()
    return b"=" + repr(value).encode()


def _text(value: bytes) -> str:
    return value.decode()


# -- jobs ----------------------------------------------------------------------------------------

_INSERT = load("job_insert_many")
_FETCH = load("job_fetch")
_EXTEND = load("job_extend_leases")
_FINISH = load("job_finish_many")
_RESCUE = load("job_rescue_expired")
_PROMOTE = load("job_promote_due")
_CANCEL = load("job_cancel_many")
_RETRY = load("job_retry_many")
_PURGE = load("job_purge")
_PRUNE = load("job_prune_finished")
_LIST = load("job_list")
_RESUME = load("queue_resume")
_NOTIFY = load("queue_notify")
_HEARTBEAT = load("worker_heartbeat")
_LEADER_ACQUIRE = load("leader_acquire")
_LEADER_RELEASE = load("leader_release")


async def insert(
    client: Client,
    keys: QueueKeys,
    jobs: Sequence[NewJob],
    now: float | None,
    others: Sequence[QueueKeys] = (),
) -> list[tuple[bool, JobState]]:
    """Insert ``jobs`` (all of ``keys``' queue); per job: (inserted, state)."""
    args: list[Any] = [_now(now), len(jobs)]
    extend = args.extend
    for job in jobs:
        run_at = job.run_at
        extend(
            (
                job.id,
                job.name,
                job.payload,
                job.priority,
                job.max_attempts,
                "" if run_at is None else run_at,
                job.delay,
            )
        )
    reply: list[bytes] = await run(client, _INSERT, (*keys.all, *(o.jobs for o in others)), args)
    return [(state[0] != 33, _STATES[state.lstrip(b"!")]) for state in reply]  # 33: "!"


@dataclass(frozen=True, slots=True)
class Fetched:
    now: float  # the time the script used (the server's when none was passed)
    next_due: float | None  # the earliest run time of a scheduled or retrying job
    rows: list[Any]  # lease mode: raw job rows for decode_job; peek mode: order keys


@dataclass(frozen=True, slots=True)
class FetchCall:
    """One call of the fetch script, built once so that it can be sent more than one way."""

    keys: tuple[str, ...]
    args: tuple[Any, ...]
    receipt: str  # also the base of the lease tokens it hands out


def fetch_call(
    keys: QueueKeys,
    *,
    now: float | None,
    limit: int,
    lease_seconds: float,
    worker_id: str,
    mode: str = "lease",
    promote_budget: int,
    receipt: str | None = None,
) -> FetchCall:
    """``mode``: 'lease', 'peek', or 'release' (give back what the call with ``receipt``
    leased, for a caller that will never see its reply)."""
    receipt = receipt or os.urandom(8).hex()
    args = (_now(now), limit, lease_seconds, worker_id, receipt, mode, promote_budget)
    return FetchCall((*keys.all, keys.tag + ":receipt:" + receipt), args, receipt)


def evalsha_command(script_keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    """The fetch script as a raw command, to send after a blocking one on the same connection."""
    return ("EVALSHA", _FETCH.sha, len(script_keys), *script_keys, *args)


def fetched(reply: Sequence[Any]) -> Fetched:
    at, due, rows = reply
    return Fetched(float(at), float(due) if due else None, rows)


async def fetch(client: Client, call: FetchCall) -> Fetched:
    return fetched(await run(client, _FETCH, call.keys, call.args))


async def release(client: Client, call: FetchCall) -> None:
    """Give back the jobs ``call`` leased (its reply was lost): queued again, attempt returned."""
    again = FetchCall(call.keys, (*call.args[:5], "release", *call.args[6:]), call.receipt)
    await run(client, _FETCH, again.keys, again.args)


def peeked(rows: Sequence[Any]) -> list[tuple[int, int, int, str]]:
    """The (priority, run at µs, seq, id) order keys of a peek."""
    return [(int(p), int(r), int(q), i.decode()) for p, r, q, i in rows]


async def extend(
    client: Client,
    keys: QueueKeys,
    leases: Sequence[tuple[str, str]],
    lease_seconds: float,
    now: float | None,
) -> list[int]:
    """Per (id, token): 0 extended, 1 extended with a cancel pending, 2 lost."""
    args: list[Any] = [_now(now), lease_seconds]
    for job_id, token in leases:
        args += (job_id, token)
    reply: list[int] = await run(client, _EXTEND, keys.all, args)
    return reply


async def finish(
    client: Client,
    keys: QueueKeys,
    finishes: Sequence[tuple[FinishJob, str]],
    *,
    keep: int | None,
    now: float | None,
) -> list[TransitionStatus]:
    """Apply (finish, error-if-cancelled-instead) pairs; a status per finish."""
    args: list[Any] = [_now(now), "" if keep is None else keep, len(finishes)]
    for item, cancelled_error in finishes:
        args += (
            item.job_id,
            item.token,
            item.kind.value,
            _opt(item.result),
            _opt(item.error),
            _opt(item.run_at),
            _opt(cancelled_error),
        )
    reply = await run(client, _FINISH, keys.all, args)
    return [TransitionStatus(status.decode()) for status in reply]


async def rescue(
    client: Client,
    keys: QueueKeys,
    members: Sequence[bytes],
    *,
    max_stalls: int,
    stalled_error: str,
    cancelled_error: str,
    now: float | None,
) -> list[str]:
    """Per member: 'requeued', 'failed', 'cancelled' or 'skipped'."""
    args = (_now(now), max_stalls, stalled_error, cancelled_error, *members)
    return [_text(outcome) for outcome in await run(client, _RESCUE, keys.all, args)]


async def promote(
    client: Client, keys: QueueKeys, members: Sequence[tuple[str, bytes]], now: float | None
) -> int:
    """Promote (set name, member) pairs that are still due; how many moved."""
    args: list[Any] = [_now(now)]
    for set_name, member in members:
        args += (set_name, member)
    moved: int = await run(client, _PROMOTE, keys.all, args)
    return moved


def _changes(ids: Sequence[str], reply: Sequence[Any]) -> list[ChangeResult]:
    results: list[ChangeResult] = []
    for job_id, (status, state) in zip(ids, reply, strict=True):
        results.append(
            ChangeResult(
                job_id, ChangeStatus(status.decode()), JobState(state.decode()) if state else None
            )
        )
    return results


async def cancel(
    client: Client, keys: QueueKeys, ids: Sequence[str], error: str, now: float | None
) -> list[ChangeResult]:
    reply = await run(client, _CANCEL, keys.all, (_now(now), error, *ids))
    return _changes(ids, reply)


async def retry(
    client: Client, keys: QueueKeys, ids: Sequence[str], now: float | None
) -> list[ChangeResult]:
    reply = await run(client, _RETRY, keys.all, (_now(now), *ids))
    return _changes(ids, reply)


async def purge(
    client: Client, keys: QueueKeys, state: JobState, finished_before: float | None, chunk: int
) -> tuple[int, int]:
    """Delete up to ``chunk`` jobs of ``state``: (jobs deleted, entries removed)."""
    args = (state.value, "" if finished_before is None else finished_before, chunk)
    deleted, removed = await run(client, _PURGE, keys.all, args)
    return int(deleted), int(removed)


async def prune_members(
    client: Client, keys: QueueKeys, state: JobState, members: Sequence[bytes]
) -> int:
    deleted: int = await run(client, _PRUNE, keys.all, (state.value, "members", *members))
    return deleted


async def prune_trim(
    client: Client, keys: QueueKeys, state: JobState, keep: int, limit: int
) -> int:
    deleted: int = await run(client, _PRUNE, keys.all, (state.value, "trim", keep, limit))
    return deleted


# Listing scans a queue's structures in slices: sources in the order the scan visits them.
def list_sources(states: Iterable[JobState]) -> list[str]:
    sources: list[str] = []
    for state in states:
        if state is JobState.QUEUED:
            sources += ("ready", "queued")
        else:
            sources.append(STATE_SETS[state])
    return sources


async def list_slice(
    client: Client,
    keys: QueueKeys,
    source: str,
    *,
    start: int,
    count: int,
    before_seq: int | None,
    name: str | None,
    top: int,
) -> tuple[int, list[tuple[int, str]]]:
    """One slice of a scan: (next start or -1, the slice's best (seq, id) matches)."""
    args = (source, start, count, "" if before_seq is None else before_seq, name or "", top)
    next_start, found = await run(client, _LIST, keys.all, args)
    return int(next_start), [(int(seq), job_id.decode()) for seq, job_id in found]


# -- plain commands ----------------------------------------------------------------------------


def member_seq(member: bytes) -> int:
    """The sequence number a set member starts with."""
    return int(member[:SEQ_DIGITS])


async def oldest_members(
    client: Client, keys: QueueKeys, state: JobState, bound: float, limit: int, *, inclusive: bool
) -> list[tuple[float, bytes]]:
    """The first ``limit`` (score, member) of ``state``'s set scored up to ``bound`` (included
    or not)."""
    upto = repr(bound) if inclusive else "(" + repr(bound)
    return await _scored(client, keys.set_of(state), upto, limit)


async def _scored(client: Client, key: str, upto: str, limit: int) -> list[tuple[float, bytes]]:
    reply: list[Any] = await client.execute_command(
        "ZRANGEBYSCORE", key, "-inf", upto, "WITHSCORES", "LIMIT", 0, limit
    )
    # redis-py pairs members with their scores itself in some versions, not in others.
    if reply and isinstance(reply[0], list | tuple):
        return [(float(score), member) for member, score in reply]
    return [(float(reply[i + 1]), reply[i]) for i in range(0, len(reply), 2)]


async def read_jobs(client: Client, wanted: Sequence[tuple[QueueKeys, str]]) -> list[Any]:
    """The raw rows ({id, fields...}, or None when absent) of (queue, id) pairs, in one round
    trip (pipelined; a cluster client splits it by node)."""
    if not wanted:
        return []
    pipe = client.pipeline(transaction=False)
    for keys, job_id in wanted:
        pipe.execute_command("HMGET", keys.job(job_id), *JOB_FIELDS)
    rows: list[Any] = []
    for (_, job_id), values in zip(wanted, await pipe.execute(), strict=True):
        rows.append(None if values[2] is None else [job_id.encode(), *values])
    return rows


async def locate(
    client: Client, queues: Sequence[QueueKeys], ids: Sequence[str]
) -> dict[str, QueueKeys]:
    """The queue each of ``ids`` is in (absent when in none), in one round trip."""
    if not ids or not queues:
        return {}
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        for keys in queues:
            pipe.execute_command("EXISTS", keys.job(job_id))
    found = iter(await pipe.execute())
    where: dict[str, QueueKeys] = {}
    for job_id in ids:
        for keys in queues:
            if next(found) and job_id not in where:
                where[job_id] = keys
    return where


async def server_time(client: Client) -> float:
    seconds, micros = await client.execute_command("TIME")
    return int(seconds) + int(micros) / 1_000_000


@dataclass(frozen=True, slots=True)
class QueueState:
    paused: bool
    counts: dict[JobState, int]


async def queue_states(client: Client, queues: Sequence[QueueKeys]) -> list[QueueState]:
    """Each queue's paused flag and jobs by state, in one round trip."""
    if not queues:
        return []
    pipe = client.pipeline(transaction=False)
    for keys in queues:
        pipe.execute_command("HGET", keys.meta, "paused")
        pipe.execute_command("LLEN", keys.ready)
        pipe.execute_command("ZCARD", keys.queued)
        for state in STATE_SETS:
            pipe.execute_command("ZCARD", keys.set_of(state))
    replies = await pipe.execute()
    width = 3 + len(STATE_SETS)
    states: list[QueueState] = []
    for n in range(len(queues)):
        paused, ready, queued, *others = replies[n * width : (n + 1) * width]
        counts = dict.fromkeys(JobState, 0)
        counts[JobState.QUEUED] = int(ready) + int(queued)
        for state, value in zip(STATE_SETS, others, strict=True):
            counts[state] = int(value)
        states.append(QueueState(paused == b"1", counts))
    return states


async def known_queues(client: Client, ns: Namespace) -> list[str]:
    names: Iterable[bytes] = await client.execute_command("SMEMBERS", ns.queues)
    return sorted(name.decode() for name in names)


async def register_queue(client: Client, ns: Namespace, queue: str) -> None:
    await client.execute_command("SADD", ns.queues, queue)


async def pause(client: Client, keys: QueueKeys) -> None:
    await client.execute_command("HSET", keys.meta, "paused", "1")


async def resume(client: Client, keys: QueueKeys) -> None:
    await run(client, _RESUME, keys.all, ())


async def notify(client: Client, keys: QueueKeys) -> None:
    await run(client, _NOTIFY, keys.all, ())


async def pop_wake(
    client: Client, blocking: BlockingConnection | None, keys: Sequence[QueueKeys], timeout: float
) -> bool:
    """Block until one of the queues' wake markers can be taken, at most ``timeout`` seconds;
    whether one was taken. ``blocking`` is the connection to block on (None on a cluster, whose
    client routes the command; pass one queue there, as queues live in different slots)."""
    command: tuple[str | float, ...] = ("BLPOP", *(k.wake for k in keys), timeout)
    if blocking is None:
        reply = await client.execute_command(*command)
    else:
        (reply,) = await blocking.execute(command)
    return reply is not None


# -- workers and leaderships -------------------------------------------------------------------


async def heartbeat(
    client: Client, ns: Namespace, info: WorkerInfo, ttl: float, now: float | None
) -> None:
    fields = {
        "id": info.id,
        "hostname": info.hostname,
        "pid": info.pid,
        "queues": list(info.queues),
        "concurrency": info.concurrency,
        "started_at": info.started_at,
        "running": info.running,
        "processed": info.processed,
    }
    # The script writes the time it used in place of the placeholder (the server's clock when
    # ``now`` is None), so a worker's last_seen_at is on the same clock as its expiry.
    described = json.dumps(fields)[:-1] + ', "last_seen_at": {last_seen_at}}'
    keys = (ns.workers, ns.worker_info, ns.worker_order)
    await run(client, _HEARTBEAT, keys, (_now(now), ttl, info.id, described))


async def deregister(client: Client, ns: Namespace, worker_id: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("ZREM", ns.workers, worker_id)
    pipe.execute_command("HDEL", ns.worker_info, worker_id)
    pipe.execute_command("ZREM", ns.worker_order, worker_id)
    await pipe.execute()


async def live_workers(client: Client, ns: Namespace, now: float | None) -> list[WorkerInfo]:
    """Workers whose registration lasts beyond ``now``, by start time, then registration order."""
    if now is None:
        now = await server_time(client)
    ids: list[bytes] = await client.execute_command(
        "ZRANGEBYSCORE", ns.workers, "(" + repr(now), "+inf"
    )
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("HMGET", ns.worker_info, *ids)
    for worker_id in ids:
        pipe.execute_command("ZSCORE", ns.worker_order, worker_id)
    infos, *orders = await pipe.execute()
    live: list[tuple[float, float, WorkerInfo]] = []
    for info, order in zip(infos, orders, strict=True):
        if info is None:
            continue
        fields = json.loads(info)
        worker = WorkerInfo(
            id=fields["id"],
            hostname=fields["hostname"],
            pid=fields["pid"],
            queues=tuple(fields["queues"]),
            concurrency=fields["concurrency"],
            started_at=float(fields["started_at"]),
            last_seen_at=float(fields["last_seen_at"]),
            running=fields["running"],
            processed=fields["processed"],
        )
        live.append((worker.started_at, float(order or 0), worker))
    live.sort(key=lambda entry: entry[:2])
    return [worker for _, _, worker in live]


async def leader_acquire(
    client: Client, ns: Namespace, name: str, holder: str, ttl: float, now: float | None
) -> bool:
    return bool(await run(client, _LEADER_ACQUIRE, (ns.leader(name),), (_now(now), ttl, holder)))


async def leader_release(client: Client, ns: Namespace, name: str, holder: str) -> None:
    await run(client, _LEADER_RELEASE, (ns.leader(name),), (holder,))
