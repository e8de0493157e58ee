"""Typed stubs over the Lua scripts that coordinate rather than move jobs: resuming and waking
queues, worker heartbeats, leaderships, schedule ticks, rate limits, groups and throughput
counters (the job scripts' stubs, and what every stub shares, are in :mod:`._stubs`)."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.backends.redis._connection import Client
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._lua import load
from conveyor.backends.redis._stubs import group_args, now_arg, run, script_keys_of
from conveyor.drivers.records import CronFire, CronFireStatus, QueueStats

_RESUME = load("queue_resume")
_NOTIFY = load("queue_notify")
_HEARTBEAT = load("worker_heartbeat")
_LEADER_ACQUIRE = load("leader_acquire")
_LEADER_RELEASE = load("leader_release")
_RATE_LIMIT_BLOCK = load("rate_limit_block")
_RATE_LIMIT_WAIT = load("rate_limit_wait")


# -- queues ----------------------------------------------------------------------------------


async def resume(client: Client, keys: QueueKeys) -> None:
    await run(client, _RESUME, script_keys_of(keys, _RESUME), ())


async def notify(client: Client, keys: QueueKeys) -> None:
    await run(client, _NOTIFY, script_keys_of(keys, _NOTIFY), ())


# -- workers and leaderships -------------------------------------------------------------------


async def heartbeat(
    client: Client,
    keys: tuple[str, str, str],
    now: float | None,
    ttl: float,
    worker_id: str,
    described: str,
) -> None:
    """Register ``worker_id`` with ``described`` (JSON holding the text '{last_seen_at}', which
    the script fills in with the time it used) in (workers, info, order) ``keys``."""
    await run(client, _HEARTBEAT, keys, (now_arg(now), ttl, worker_id, described))


async def leader_acquire(
    client: Client, key: str, holder: str, ttl: float, now: float | None
) -> bool:
    return bool(await run(client, _LEADER_ACQUIRE, (key,), (now_arg(now), ttl, holder)))


async def leader_release(client: Client, key: str, holder: str) -> None:
    await run(client, _LEADER_RELEASE, (key,), (holder,))


# -- schedules -----------------------------------------------------------------------------------

_CRON_FIRE = load("cron_fire")


async def cron_fire(
    client: Client, keys: QueueKeys, fire: CronFire, now: float | None
) -> tuple[CronFireStatus, int]:
    """Fire one tick (its job's queue is ``keys``'); (what happened, the latest tick)."""
    fixed = _CRON_FIRE.keys[:-1]  # "cron" is per call: the schedule's own hash
    script_keys = (*keys.named(_CRON_FIRE.name, fixed), keys.cron(fire.name))
    job = fire.job
    args = (
        now_arg(now),
        fire.tick,
        "1" if fire.skip_if_running else "0",
        job.id,
        job.name,
        job.payload,
        job.priority,
        job.max_attempts,
        "" if job.run_at is None else job.run_at,
        job.delay,
        "" if job.keep_completed is None else float(job.keep_completed),
        "" if job.keep_failed is None else float(job.keep_failed),
        *group_args(job),
        job.headers or "",
    )
    status, tick = await run(client, _CRON_FIRE, script_keys, args)
    text = status.decode() if isinstance(status, bytes) else str(status)
    return CronFireStatus(text), int(tick)


# -- rate limits ---------------------------------------------------------------------------------


async def rate_limit_block(
    client: Client, keys: QueueKeys, seconds: float, now: float | None
) -> None:
    await run(
        client, _RATE_LIMIT_BLOCK, script_keys_of(keys, _RATE_LIMIT_BLOCK), (now_arg(now), seconds)
    )


async def rate_limit_wait(
    client: Client, keys: QueueKeys, count: int, per: float, now: float | None
) -> float | None:
    """Seconds until the queue's limit lets a job start, or None if one may start now."""
    reply = await run(
        client, _RATE_LIMIT_WAIT, script_keys_of(keys, _RATE_LIMIT_WAIT), (now_arg(now), count, per)
    )
    return float(reply) if reply else None


# -- groups --------------------------------------------------------------------------------------

_GROUP_BLOCK = load("group_block")
_GROUP_WAIT = load("group_wait")
_GROUP_PRUNE = load("group_prune")


async def group_block(
    client: Client, keys: QueueKeys, group: str, seconds: float, now: float | None
) -> None:
    await run(
        client, _GROUP_BLOCK, script_keys_of(keys, _GROUP_BLOCK), (now_arg(now), group, seconds)
    )


async def group_wait(
    client: Client, keys: QueueKeys, names: Sequence[str] | None, now: float | None
) -> float | None:
    """Seconds until the queue's first group (of ``names``, when given) held only by time may
    start a job, or None."""
    args = (now_arg(now), *(names or ()))
    reply = await run(client, _GROUP_WAIT, script_keys_of(keys, _GROUP_WAIT), args)
    return float(reply) if reply else None


async def group_prune(client: Client, keys: QueueKeys, limit: int, now: float | None) -> int:
    """Delete up to ``limit`` records of the queue's idle groups; how many went."""
    deleted: int = await run(
        client, _GROUP_PRUNE, script_keys_of(keys, _GROUP_PRUNE), (now_arg(now), limit)
    )
    return deleted


# -- throughput counters -------------------------------------------------------------------------

_STATS_ADD = load("stats_add")


async def stats_add(
    client: Client, keys: QueueKeys, samples: Sequence[QueueStats], keep: int, now: float | None
) -> None:
    """Add ``samples`` (all of ``keys``' queue, at most STATS_MAX_SAMPLES: one atomic call) to
    its buckets, dropping those older than ``keep`` minutes before ``now``."""
    args: list[object] = [now_arg(now), keep, len(samples)]
    for s in samples:
        args += (s.minute, s.completed, s.retried, s.failed)
    await run(client, _STATS_ADD, script_keys_of(keys, _STATS_ADD), args)
