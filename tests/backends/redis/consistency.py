"""A structural check of a Redis store: every job is where its state says, exactly once.

The Redis backend keeps each job twice: its hash, and a membership in the structure of its
state (the ready list or queued set, the scheduled, retrying, active, completed, failed or
cancelled set). A crash, restart or bug that broke one without the other would lose a job
silently or run it twice; this check finds that.
"""

from __future__ import annotations

from collections import Counter

import redis

from conveyor.backends.redis._connection import parse_url
from conveyor.backends.redis._keys import STATE_SETS, Namespace, QueueKeys

SEQ = 16


def problems(url: str) -> list[str]:
    """What is inconsistent in the store at ``url`` (empty when all is well)."""
    target = parse_url(url)
    if target.cluster:
        client: redis.Redis | redis.RedisCluster = redis.RedisCluster.from_url(target.client_url)
    else:
        client = redis.Redis.from_url(target.client_url)
    try:
        ns = Namespace(target.prefix)
        found: list[str] = []
        for raw in sorted(client.smembers(ns.queues)):
            found += _queue_problems(client, QueueKeys(target.prefix, raw.decode()))
        return found
    finally:
        client.close()


def _queue_problems(client: redis.Redis | redis.RedisCluster, keys: QueueKeys) -> list[str]:
    placed: Counter[str] = Counter()
    where: dict[str, str] = {}
    for job_id in client.lrange(keys.ready, 0, -1):
        placed[job_id.decode()] += 1
        where[job_id.decode()] = "queued"
    for member in client.zrange(keys.queued, 0, -1):
        job_id = member[2 * SEQ :].decode()
        placed[job_id] += 1
        where[job_id] = "queued"
    for state in STATE_SETS:
        for member in client.zrange(keys.set_of(state), 0, -1):
            job_id = member[SEQ:].decode()
            placed[job_id] += 1
            where[job_id] = state.value
    hashes = {
        key.decode()[len(keys.jobs) :]
        for key in client.scan_iter(match=_glob(keys.jobs) + "*", count=1000)
    }
    issues = [
        f"{keys.queue}: {job_id} is in {n} structures" for job_id, n in placed.items() if n > 1
    ]
    for job_id in sorted(set(placed) - hashes):
        issues.append(f"{keys.queue}: {job_id} is listed as {where[job_id]} but has no hash")
    for job_id in sorted(hashes):
        state = client.hget(keys.job(job_id), "s")
        state_text = state.decode() if state is not None else None
        if job_id not in where:
            issues.append(f"{keys.queue}: {job_id} ({state_text}) is in no structure: lost")
        elif where[job_id] != state_text:
            issues.append(f"{keys.queue}: {job_id} is {state_text} but listed as {where[job_id]}")
    return issues


def _glob(text: str) -> str:
    """``text`` as a literal SCAN pattern (the hash tag's braces are fine, brackets are not)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
