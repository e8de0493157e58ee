"""The plain commands the backend sends besides its scripts (reads, the registries of queues,
workers and routes, wake-up and cancel lists), and the shapes of their replies. Either client
may run them: the lean one returns flat lists, redis-py's cluster client sometimes parses
replies itself, and both forms are read here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from conveyor.backends.redis._connection import Client
from conveyor.backends.redis._keys import INDEXED_STATES, SEQ_DIGITS, Namespace, QueueKeys
from conveyor.backends.redis._records import JOB_FIELDS
from conveyor.backends.redis._resp import BlockingConnection
from conveyor.drivers.records import JobState, WorkerInfo

# How long a worker's list of cancelled jobs outlives its last push: a worker that died meanwhile
# never reads it, and nothing else does.
CANCELS_TTL: Final = 300


def member_seq(member: bytes) -> int:
    """The sequence number a state set member starts with."""
    return int(member[:SEQ_DIGITS])


def member_id(member: bytes) -> str:
    return member[SEQ_DIGITS:].decode(errors="replace")


async def server_time(client: Client) -> float:
    seconds, micros = await client.execute_command("TIME")
    return int(seconds) + int(micros) / 1_000_000


# -- reading jobs ------------------------------------------------------------------------------


async def oldest_members(
    client: Client, key: str, bound: float, limit: int, *, inclusive: bool
) -> list[tuple[float, bytes]]:
    """The first ``limit`` (score, member) of the sorted set ``key`` scored up to ``bound``
    (included or not)."""
    upto = repr(bound) if inclusive else "(" + repr(bound)
    reply: list[Any] = await client.execute_command(
        "ZRANGEBYSCORE", key, "-inf", upto, "WITHSCORES", "LIMIT", 0, limit
    )
    # redis-py pairs members with their scores itself in some versions, not in others.
    if reply and isinstance(reply[0], list | tuple):
        return [(float(score), member) for member, score in reply]
    return [(float(reply[i + 1]), reply[i]) for i in range(0, len(reply), 2)]


Row = list[Any]  # {id, field values in JOB_FIELDS order}, for decode_job


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A job key that holds something other than a job hash: the server's refusal."""

    key: str
    error: Exception


async def read_jobs(
    client: Client, wanted: Sequence[tuple[QueueKeys, str]]
) -> list[Row | Unreadable | None]:
    """Per (queue, id): the job's row, None when there is no such job, or :class:`Unreadable`;
    in one round trip (pipelined; a cluster client splits it by node)."""
    if not wanted:
        return []
    pipe = client.pipeline(transaction=False)
    for keys, job_id in wanted:
        pipe.execute_command("HMGET", keys.job(job_id), *JOB_FIELDS)
    rows: list[Row | Unreadable | None] = []
    for (keys, job_id), values in zip(
        wanted, await pipe.execute(raise_on_error=False), strict=True
    ):
        if isinstance(values, Exception):
            rows.append(Unreadable(keys.job(job_id), values))
        else:
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


# -- queues ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueState:
    paused: bool
    counts: dict[JobState, int]


async def queue_states(client: Client, queues: Sequence[QueueKeys]) -> list[QueueState]:
    """Each queue's paused flag and jobs by state (the sizes of its listing indexes and active
    set), in one round trip. Queued jobs are the queued set's plus the ready list's live
    entries: its length less the stale ones, which the ``dead`` hash has one field each for
    (see lua/includes/place.lua), plus the grouped ones, which the meta hash counts (see
    lua/includes/groups.lua). The queued set is counted rather than its index, which a store
    written before the ready list went unindexed still has entries of that list in."""
    if not queues:
        return []
    pipe = client.pipeline(transaction=False)
    for keys in queues:
        pipe.execute_command("HMGET", keys.meta, "paused", "gq")
        # Below +inf: the active set's sentinel is no job (see lua/includes/active.lua).
        pipe.execute_command("ZCOUNT", keys.active, "-inf", "(+inf")
        pipe.execute_command("LLEN", keys.ready)
        pipe.execute_command("HLEN", keys.dead)
        for state in INDEXED_STATES:
            key = keys.queued if state is JobState.QUEUED else keys.by_seq(state)
            pipe.execute_command("ZCARD", key)
    replies = await pipe.execute()
    width = 4 + len(INDEXED_STATES)
    states: list[QueueState] = []
    for n in range(len(queues)):
        (paused, grouped), active, ready, dead, *indexed = replies[n * width : (n + 1) * width]
        counts = dict.fromkeys(JobState, 0)
        counts[JobState.ACTIVE] = int(active)
        for state, value in zip(INDEXED_STATES, indexed, strict=True):
            counts[state] = int(value)
        # Read apart from the list, the dead hash may be a moment newer: never below zero.
        counts[JobState.QUEUED] += max(0, int(ready) - int(dead)) + max(0, int(grouped or 0))
        states.append(QueueState(paused == b"1", counts))
    return states


async def known_queues(client: Client, ns: Namespace) -> list[str]:
    names: Iterable[bytes] = await client.execute_command("SMEMBERS", ns.queues)
    return sorted(name.decode() for name in names)


async def register_queue(client: Client, ns: Namespace, queue: str) -> None:
    await client.execute_command("SADD", ns.queues, queue)


async def pause(client: Client, keys: QueueKeys) -> None:
    await client.execute_command("HSET", keys.meta, "paused", "1")


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


# -- routes ------------------------------------------------------------------------------------


async def route_register(client: Client, ns: Namespace, routes: Mapping[str, str]) -> None:
    if routes:
        pairs = [item for name, queue in routes.items() for item in (name, queue)]
        await client.execute_command("HSET", ns.routes, *pairs)


async def route_list(client: Client, ns: Namespace) -> dict[str, str]:
    reply: Any = await client.execute_command("HGETALL", ns.routes)
    items: list[tuple[Any, Any]]
    if hasattr(reply, "items"):  # redis-py parses it into a dict
        parsed: Mapping[Any, Any] = reply
        items = list(parsed.items())
    else:
        items = [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
    return {bytes(k).decode(): bytes(v).decode() for k, v in items}


# -- cancel notifications ----------------------------------------------------------------------


async def push_cancels(client: Client, ns: Namespace, cancels: Sequence[tuple[str, str]]) -> None:
    """Tell each worker of (worker id, job id) pairs about the job, in one round trip."""
    if not cancels:
        return
    pipe = client.pipeline(transaction=False)
    for worker_id, job_id in cancels:
        key = ns.cancels(worker_id)
        pipe.execute_command("RPUSH", key, job_id)
        pipe.execute_command("EXPIRE", key, CANCELS_TTL)
    await pipe.execute()


async def pop_cancels(
    client: Client,
    blocking: BlockingConnection | None,
    key: str,
    timeout: float,
    *,
    most: int,
) -> list[str]:
    """Wait up to ``timeout`` seconds (none when 0) for ids in the list ``key``; take them all,
    at most ``most``. ``blocking`` is the connection to block on (None on a cluster)."""
    if timeout <= 0:
        popped: Any = await client.execute_command("LPOP", key, most)
        return [bytes(i).decode() for i in popped or ()]
    if blocking is not None:
        first, rest = await blocking.execute(("BLPOP", key, timeout), ("LPOP", key, most - 1))
    else:
        first = await client.execute_command("BLPOP", key, timeout)
        rest = await client.execute_command("LPOP", key, most - 1) if first else None
    if not first:
        return []
    return [bytes(first[1]).decode(), *(bytes(i).decode() for i in rest or ())]


# -- workers -----------------------------------------------------------------------------------


def worker_keys(ns: Namespace) -> tuple[str, str, str]:
    return ns.workers, ns.worker_info, ns.worker_order


def describe_worker(info: WorkerInfo) -> str:
    """``info`` as JSON, with ``last_seen_at`` left for the heartbeat script to fill in (so a
    worker's last_seen_at is on the same clock as its expiry)."""
    fields = {
        "id": info.id,
        "hostname": info.hostname,
        "pid": info.pid,
        "queues": list(info.queues),
        "concurrency": info.concurrency,
        "started_at": info.started_at,
        "running": info.running,
        "processed": info.processed,
        "names": list(info.names),
    }
    return json.dumps(fields)[:-1] + ', "last_seen_at": {last_seen_at}}'


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
            names=tuple(fields.get("names", ())),  # absent from older workers' heartbeats
        )
        live.append((worker.started_at, float(order or 0), worker))
    live.sort(key=lambda entry: entry[:2])
    return [worker for _, _, worker in live]
