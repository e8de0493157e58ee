"""Typed stubs over the Lua scripts that move jobs, and what every stub shares: with
:mod:`._coordination` (queues, workers, leaders, schedules, rate limits), the only modules that
know the scripts' KEYS, ARGV layout and reply shapes (key names are in :mod:`._keys`; the plain
commands are in :mod:`._commands`).

Every script of a queue receives only the keys it uses, all of one hash tag (one Redis Cluster
slot), in the order its header declares (:data:`._script_keys.SCRIPT_KEYS`). Stubs of batch
operations send at most :data:`BATCH` items per script call, so that no call keeps the server
busy for more than a few milliseconds, however many items the caller passes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from redis.exceptions import NoScriptError

from conveyor.backends.redis._connection import Client
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._lua import Script, load
from conveyor.backends.redis._resp import Client as LeanClient
from conveyor.backends.redis._resp import NoScript
from conveyor.backends.redis._script_keys import SCRIPT_KEYS
from conveyor.drivers.common import CANCELLED_ERROR
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    FinishJob,
    InsertStatus,
    JobState,
    Lease,
    NewJob,
    ProgressUpdate,
    RescueJob,
    TransitionStatus,
)

T = TypeVar("T")

BATCH: Final = 500  # items per script call


def group_args(job: NewJob) -> tuple[str, str]:
    """A job's group arguments: its key and its group's limits as groups.lua reads them."""
    group = job.group
    if group is None:
        return _NO_GROUP
    return group.key, f"{group.concurrency},{group.rate_count},{float(group.rate_per)!r}"


_STATES: Final = {state.value.encode(): state for state in JobState}
_NO_GROUP: Final = ("", "")


def chunks(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def run(client: Client, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` by SHA, sending its source only when the server does not know it."""
    try:
        return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except (NoScript, NoScriptError):
        return await client.execute_command("EVAL", script.source, len(keys), *keys, *args)


def script_keys_of(keys: QueueKeys, script: Script) -> tuple[str, ...]:
    return keys.named(script.name, SCRIPT_KEYS[script.name][0])


def now_arg(now: float | None) -> float | str:
    return "" if now is None else now


def _opt(value: str | bytes | None) -> bytes:
    """An optional argument: b'' for none, else '=' and the value (see ``opt`` in the scripts)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return b"=" + value
    return b"=" + value.encode()


# -- jobs ----------------------------------------------------------------------------------------

_INSERT = load("job_insert_many")
_INSERT_DEDUP = load("job_insert_dedup")
_FETCH = load("job_fetch")
_EXTEND = load("job_extend_leases")
_FINISH = load("job_finish_many")
_RESCUE = load("job_rescue_many")
_PROMOTE = load("job_promote_due")
_CANCEL = load("job_cancel_many")
_RETRY = load("job_retry_many")
_PURGE = load("job_purge")
_PRUNE = load("job_prune_finished")
_LIST = load("job_list")
_PRUNE_EXPIRED = load("job_prune_expired")
_PROGRESS = load("job_progress_many")
_DELETE = load("job_delete_many")


def insert_args(jobs: Sequence[NewJob], now: float | None) -> list[Any]:
    """The insert script's ARGV for ``jobs``."""
    args: list[Any] = [now_arg(now), len(jobs)]
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
                "" if job.keep_completed is None else float(job.keep_completed),
                "" if job.keep_failed is None else float(job.keep_failed),
                *group_args(job),
                job.headers or "",
            )
        )
    return args


def inserted(reply: Sequence[bytes]) -> list[tuple[bool, JobState]]:
    """The insert script's reply: per job, (inserted, state)."""
    return [(state[0] != 33, _STATES[state.lstrip(b"!")]) for state in reply]  # 33: "!"


async def insert(
    client: Client,
    keys: QueueKeys,
    jobs: Sequence[NewJob],
    now: float | None,
    others: Sequence[QueueKeys] = (),
) -> list[tuple[bool, JobState]]:
    """Insert ``jobs`` (all of ``keys``' queue); per job: (inserted, state)."""
    script_keys = (*script_keys_of(keys, _INSERT), *(o.jobs for o in others))
    results: list[tuple[bool, JobState]] = []
    for batch in chunks(jobs):
        results += inserted(await run(client, _INSERT, script_keys, insert_args(batch, now)))
    return results


def start_insert(
    client: Client,
    keys: QueueKeys,
    jobs: Sequence[NewJob],
    now: float | None,
    others: Sequence[QueueKeys] = (),
) -> asyncio.Future[Any] | None:
    """Send the insert of ``jobs`` (at most :data:`BATCH`) before returning, when the lean
    client has a connection to send it on: the future of its reply (read it with
    :func:`inserted`); else None, and nothing was sent."""
    if not isinstance(client, LeanClient) or len(jobs) > BATCH:
        return None
    script_keys = (*script_keys_of(keys, _INSERT), *(o.jobs for o in others))
    args = insert_args(jobs, now)
    return client.send_now("EVALSHA", _INSERT.sha, len(script_keys), *script_keys, *args)


async def insert_dedup(
    client: Client,
    keys: QueueKeys,
    jobs: Sequence[NewJob],
    now: float | None,
    others: Sequence[QueueKeys] = (),
) -> list[tuple[InsertStatus, JobState, str]]:
    """Insert ``jobs``, some with dedup keys (all of ``keys``' queue, in order); per job:
    (outcome, state, the id of the job returned)."""
    script_keys = (*script_keys_of(keys, _INSERT_DEDUP), *(o.jobs for o in others))
    results: list[tuple[InsertStatus, JobState, str]] = []
    for batch in chunks(jobs):
        args: list[Any] = [now_arg(now), len(batch)]
        for job in batch:
            dedup = job.dedup
            args += (
                *(job.id, job.name, job.payload, job.priority, job.max_attempts),
                *("" if job.run_at is None else job.run_at, job.delay),
                *(("", "", 0) if dedup is None else (dedup.mode.value, dedup.key, dedup.seconds)),
                "" if job.keep_completed is None else float(job.keep_completed),
                "" if job.keep_failed is None else float(job.keep_failed),
                *group_args(job),
                job.headers or "",
            )
        reply: list[list[bytes]] = await run(client, _INSERT_DEDUP, script_keys, args)
        results += [
            (InsertStatus(outcome.decode()), _STATES[state], job_id.decode())
            for outcome, state, job_id in reply
        ]
    return results


@dataclass(frozen=True, slots=True)
class Fetched:
    now: float  # the time the script used (the server's when none was passed)
    next_due: float | None  # the earliest run time of a scheduled or retrying job
    rows: list[Any]  # lease mode: raw job rows for decode_job; peek mode: order keys
    dropped: list[tuple[str, str]]  # (id, why) of queue entries that named no queued job


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
    receipt_ttl: float,
    previous_receipt: str | None = None,
    rate: tuple[int, float] | None = None,
) -> FetchCall:
    """``mode``: 'lease', 'peek', or 'release' (give back what the call with ``receipt``
    leased, for a caller that will never see its reply). The receipt is kept ``receipt_ttl``
    seconds; ``previous_receipt``, the caller's last of this queue, is deleted by a lease.
    ``rate``: the queue's rate limit (count, per seconds), applied and logged by the call."""
    receipt = os.urandom(8).hex()
    receipt_key = keys.receipt(receipt)
    previous = keys.receipt(previous_receipt) if previous_receipt else receipt_key
    script_keys = (*keys.named("job_fetch", SCRIPT_KEYS["job_fetch"][0][:-2]), receipt_key)
    args = (
        now_arg(now),
        limit,
        lease_seconds,
        worker_id,
        receipt,
        mode,
        promote_budget,
        max(int(receipt_ttl * 1000), 1),
        "1" if previous_receipt else "",
        *(("", "") if rate is None else rate),
    )
    return FetchCall((*script_keys, previous), args, receipt)


def evalsha_command(call: FetchCall) -> tuple[Any, ...]:
    """The fetch script as a raw command, to send after a blocking one on the same connection."""
    return ("EVALSHA", _FETCH.sha, len(call.keys), *call.keys, *call.args)


def fetched(reply: Sequence[Any]) -> Fetched:
    at, due, rows, dropped = reply
    return Fetched(
        float(at),
        float(due) if due else None,
        rows,
        [(bytes(job_id).decode(errors="replace"), bytes(why).decode()) for job_id, why in dropped],
    )


async def fetch(client: Client, call: FetchCall) -> Fetched:
    return fetched(await run(client, _FETCH, call.keys, call.args))


async def release(client: Client, call: FetchCall) -> None:
    """Give back the jobs ``call`` leased (its reply was lost): queued again, attempt returned."""
    args = (*call.args[:5], "release", *call.args[6:8], "", "", "")
    await run(client, _FETCH, call.keys, args)


def peeked(rows: Sequence[Any]) -> list[tuple[int, int, int, str]]:
    """The (priority, run at µs, seq, id) order keys of a peek."""
    return [(int(p), int(r), int(q), i.decode()) for p, r, q, i in rows]


async def extend(
    client: Client,
    keys: QueueKeys,
    leases: Sequence[Lease],
    lease_seconds: float,
    now: float | None,
) -> list[int]:
    """Per lease: 0 extended, 1 extended with a cancel pending, 2 lost."""
    outcomes: list[int] = []
    for batch in chunks(leases):
        args: list[Any] = [now_arg(now), lease_seconds]
        for lease in batch:
            args += (lease.job_id, lease.token, "1" if lease.isolated else "")
        outcomes += await run(client, _EXTEND, script_keys_of(keys, _EXTEND), args)
    return outcomes


async def finish(
    client: Client,
    keys: QueueKeys,
    finishes: Sequence[FinishJob],
    *,
    keep: int | None,
    now: float | None,
) -> list[TransitionStatus]:
    """Apply ``finishes`` (all of ``keys``' queue, checked by the caller); a status each."""
    statuses: list[TransitionStatus] = []
    for batch in chunks(finishes):
        args: list[Any] = [now_arg(now), "" if keep is None else keep, CANCELLED_ERROR, len(batch)]
        for item in batch:
            args += (
                item.job_id,
                item.token,
                item.kind.value,
                _opt(item.result),
                _opt(item.error),
                item.delay,
            )
        reply = await run(client, _FINISH, script_keys_of(keys, _FINISH), args)
        statuses += [_STATUSES.get(status) or TransitionStatus(status.decode()) for status in reply]
    return statuses


# A status by its bytes: a lookup per job, not an enum call (the enum still refuses others).
_STATUSES: Final = {status.value.encode(): status for status in TransitionStatus}


async def rescue(
    client: Client,
    keys: QueueKeys,
    rescues: Sequence[RescueJob],
    *,
    cancelled_error: str,
    now: float | None,
) -> list[TransitionStatus]:
    """Apply the rescuer's decisions (all of ``keys``' queue); a status each."""
    statuses: list[TransitionStatus] = []
    for batch in chunks(rescues):
        args: list[Any] = [now_arg(now), cancelled_error, len(batch)]
        for item in batch:
            args += (item.job_id, item.token, item.kind.value, item.stalls, item.error)
        reply = await run(client, _RESCUE, script_keys_of(keys, _RESCUE), args)
        statuses += [TransitionStatus(status.decode()) for status in reply]
    return statuses


async def promote(
    client: Client, keys: QueueKeys, members: Sequence[tuple[JobState, bytes]], now: float | None
) -> int:
    """Promote (state, member) pairs that are still due; how many moved."""
    moved = 0
    for batch in chunks(members):
        args: list[Any] = [now_arg(now)]
        for state, member in batch:
            args += (state.value, member)
        moved += await run(client, _PROMOTE, script_keys_of(keys, _PROMOTE), args)
    return moved


def _changes(ids: Sequence[str], reply: Sequence[Any]) -> list[tuple[ChangeResult, str | None]]:
    results: list[tuple[ChangeResult, str | None]] = []
    for job_id, (status, state, *worker) in zip(ids, reply, strict=True):
        change = ChangeResult(
            job_id, ChangeStatus(status.decode()), JobState(state.decode()) if state else None
        )
        results.append((change, worker[0].decode() if worker and worker[0] else None))
    return results


async def cancel(
    client: Client, keys: QueueKeys, ids: Sequence[str], error: str, now: float | None
) -> list[tuple[ChangeResult, str | None]]:
    """Cancel ``ids``; per id its result and, when a running job was asked to stop, the id of
    the worker running it."""
    results: list[tuple[ChangeResult, str | None]] = []
    for batch in chunks(ids):
        reply = await run(
            client, _CANCEL, script_keys_of(keys, _CANCEL), (now_arg(now), error, *batch)
        )
        results += _changes(batch, reply)
    return results


async def retry(
    client: Client, keys: QueueKeys, ids: Sequence[str], now: float | None
) -> list[ChangeResult]:
    results: list[ChangeResult] = []
    for batch in chunks(ids):
        reply = await run(client, _RETRY, script_keys_of(keys, _RETRY), (now_arg(now), *batch))
        results += [change for change, _ in _changes(batch, reply)]
    return results


async def purge(
    client: Client, keys: QueueKeys, state: JobState, finished_before: float | None, chunk: int
) -> tuple[int, int]:
    """Delete up to ``chunk`` jobs of ``state``: (jobs deleted, entries removed)."""
    script_keys = (
        keys.jobs,
        keys.set_of(state),
        keys.by_seq(state),
        keys.ready,
        keys.dead,
        keys.meta,
        keys.dedup,
        keys.dedup_jobs,
        keys.expiring,
        keys.groups,
        keys.ring,
        keys.group_idle,
        keys.group_records,
    )
    args = (state.value, "" if finished_before is None else finished_before, chunk)
    deleted, removed = await run(client, _PURGE, script_keys, args)
    return int(deleted), int(removed)


async def prune_members(
    client: Client, keys: QueueKeys, state: JobState, members: Sequence[bytes]
) -> int:
    script_keys = (
        *(keys.jobs, keys.set_of(state), keys.by_seq(state)),
        *(keys.dedup, keys.dedup_jobs, keys.expiring),
    )
    deleted = 0
    for batch in chunks(members):
        deleted += await run(client, _PRUNE, script_keys, ("members", *batch))
    return deleted


async def prune_trim(
    client: Client, keys: QueueKeys, state: JobState, keep: int, limit: int
) -> int:
    script_keys = (
        *(keys.jobs, keys.set_of(state), keys.by_seq(state)),
        *(keys.dedup, keys.dedup_jobs, keys.expiring),
    )
    deleted: int = await run(client, _PRUNE, script_keys, ("trim", keep, limit))
    return deleted


async def prune_expired(
    client: Client, keys: QueueKeys, members: Sequence[bytes], now: float | None
) -> int:
    """Delete the jobs of ``members`` of ``keys``' expiring set whose retention expired."""
    deleted = 0
    for batch in chunks(members):
        deleted += await run(
            client, _PRUNE_EXPIRED, script_keys_of(keys, _PRUNE_EXPIRED), (now_arg(now), *batch)
        )
    return deleted


async def delete(client: Client, keys: QueueKeys, ids: Sequence[str]) -> list[ChangeResult]:
    """Delete the finished jobs of ``ids`` (all of ``keys``' queue); a result each."""
    results: list[ChangeResult] = []
    for batch in chunks(ids):
        reply = await run(client, _DELETE, script_keys_of(keys, _DELETE), (len(batch), *batch))
        results += [change for change, _ in _changes(batch, reply)]
    return results


async def progress(
    client: Client, keys: QueueKeys, updates: Sequence[ProgressUpdate], now: float | None
) -> list[TransitionStatus]:
    """Store the progress of ``updates`` (all of ``keys``' queue); a status each."""
    statuses: list[TransitionStatus] = []
    for batch in chunks(updates):
        args: list[Any] = [now_arg(now), len(batch)]
        for u in batch:
            args += (u.job_id, u.token, float(u.fraction), _opt(u.message))
        reply = await run(client, _PROGRESS, script_keys_of(keys, _PROGRESS), args)
        statuses += [TransitionStatus(status.decode()) for status in reply]
    return statuses


@dataclass(frozen=True, slots=True)
class Listed:
    """What one state of one queue offers a page: its newest matches, newest first."""

    matches: list[tuple[int, str]]  # (seq, id)
    next_before: int | None  # where a name filter's scan goes on, None when done


async def list_newest(
    client: Client,
    keys: QueueKeys,
    wanted: Sequence[tuple[JobState, int | None]],
    *,
    limit: int,
    name: str | None,
    scan: int,
) -> list[Listed]:
    """Per (state, before) of ``wanted``: the newest matches of that state below ``before``."""
    args: list[Any] = [limit, name or "", scan]
    for state, before in wanted:
        args += (state.value, "" if before is None else before)
    reply = await run(client, _LIST, script_keys_of(keys, _LIST), args)
    return [
        Listed(
            [(int(seq), bytes(job_id).decode(errors="replace")) for seq, job_id in found],
            int(next_before) if next_before else None,
        )
        for next_before, *found in reply
    ]
