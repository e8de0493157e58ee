"""A structural check of a Redis store: every job is where its state says, exactly once.

The Redis backend keeps each job in several places: its hash, a membership in the structure
of its state (the ready list or queued set, the scheduled, retrying, active, completed, failed
or cancelled set), and, for every state but active and but queued jobs in the ready list, an
entry in the state's listing index. A crash, restart or bug that broke one without the others
would lose a job silently, run it twice, or make counts and listings lie; this check finds
that. The ready list must be in increasing seq (listing bisects it) and hold an id at most
once; a stale entry (of a job cancelled while it waited there) is one the ``dead`` hash
counts, once. A job with an expiry (its own retention) is completed or failed and has one
entry in the expiring set, scored by that expiry, and the set has no other entries. A grouped
queued job waits in its group's set (indexed like the queued set's jobs), and the groups' books
agree with the jobs: the queued count, each group's active count, and the ring, which holds
exactly the groups with queued jobs and room, scored by their turn (in whole microseconds).
"""

from __future__ import annotations

from collections import Counter

import redis

from conveyor.backends.redis._connection import parse_url
from conveyor.backends.redis._keys import (
    ACTIVE_SENTINEL,
    INDEXED_STATES,
    STATE_SETS,
    Namespace,
    QueueKeys,
)
from conveyor.drivers.records import JobState

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
    issues: list[str] = []
    ready = [job_id.decode() for job_id in client.lrange(keys.ready, 0, -1)]
    entries = Counter(ready)
    dead = {k.decode(): int(v) for k, v in client.hgetall(keys.dead).items()}
    for job_id, stale in dead.items():
        if stale != 1 or entries[job_id] != 1:
            issues.append(
                f"{keys.queue}: {job_id} has {stale} stale entries counted, and "
                f"{entries[job_id]} in the ready list"
            )
    issues += [
        f"{keys.queue}: {job_id} has {n} entries in the ready list"
        for job_id, n in entries.items()
        if n > 1
    ]
    previous = -1
    for job_id in ready:
        if job_id not in dead:
            seq = client.hget(keys.job(job_id), "q")
            if seq is not None and int(seq) <= previous:
                issues.append(f"{keys.queue}: {job_id} is out of seq order in the ready list")
            previous = int(seq) if seq is not None else previous
    for job_id, n in entries.items():
        live = n - dead.get(job_id, 0)
        if live > 0:
            placed[job_id] += live
            where[job_id] = "queued"
    for member in client.zrange(keys.queued, 0, -1):
        job_id = member[2 * SEQ :].decode()
        placed[job_id] += 1
        where[job_id] = "queued"
    grouped = _grouped(client, keys)
    for key, members in grouped.items():
        for job_id in members:
            placed[job_id] += 1
            where[job_id] = "queued"
            if client.hget(keys.job(job_id), "g") != key.encode():
                issues.append(f"{keys.queue}: {job_id} waits in group {key!r}, not its own")
    for state in STATE_SETS:
        for member in client.zrange(keys.set_of(state), 0, -1):
            if state is JobState.ACTIVE and member == ACTIVE_SENTINEL:
                continue
            job_id = member[SEQ:].decode()
            placed[job_id] += 1
            where[job_id] = state.value
    hashes = {
        key.decode()[len(keys.jobs) :]
        for key in client.scan_iter(match=_glob(keys.jobs) + "*", count=1000)
    }
    issues += [
        f"{keys.queue}: {job_id} is in {n} structures" for job_id, n in placed.items() if n > 1
    ]
    for job_id in sorted(set(placed) - hashes):
        issues.append(f"{keys.queue}: {job_id} is listed as {where[job_id]} but has no hash")
    jobs: dict[str, tuple[str | None, int | None]] = {}
    for job_id in sorted(hashes):
        state, seq = client.hmget(keys.job(job_id), "s", "q")
        state_text = state.decode() if state is not None else None
        jobs[job_id] = (state_text, int(seq) if seq is not None else None)
        if job_id not in where:
            issues.append(f"{keys.queue}: {job_id} ({state_text}) is in no structure: lost")
        elif where[job_id] != state_text:
            issues.append(f"{keys.queue}: {job_id} is {state_text} but listed as {where[job_id]}")
    in_set = {member[2 * SEQ :].decode() for member in client.zrange(keys.queued, 0, -1)}
    in_set |= {job_id for members in grouped.values() for job_id in members}
    issues += _index_problems(client, keys, jobs, in_set)
    issues += _group_problems(client, keys, jobs, grouped)
    issues += _dedup_problems(client, keys, hashes)
    issues += _expiry_problems(client, keys, jobs)
    return issues


def _grouped(client: redis.Redis | redis.RedisCluster, keys: QueueKeys) -> dict[str, list[str]]:
    """The ids of the jobs waiting in each group's set, by group key."""
    prefix = keys.groups + ":"
    found: dict[str, list[str]] = {}
    for raw in client.scan_iter(match=_glob(prefix) + "*", count=1000):
        key = raw.decode()[len(prefix) :]
        found[key] = [m[2 * SEQ :].decode() for m in client.zrange(raw, 0, -1)]
    return found


def _group_problems(
    client: redis.Redis | redis.RedisCluster,
    keys: QueueKeys,
    jobs: dict[str, tuple[str | None, int | None]],
    grouped: dict[str, list[str]],
) -> list[str]:
    issues: list[str] = []
    total = sum(len(members) for members in grouped.values())
    counted = int(client.hget(keys.meta, "gq") or 0)
    if counted != total:
        issues.append(f"{keys.queue}: {total} grouped jobs wait, the count says {counted}")
    active: Counter[str] = Counter()
    for job_id, (state, _) in jobs.items():
        group = client.hget(keys.job(job_id), "g")
        if group is not None and state == "active":
            active[group.decode()] += 1
        if (
            group is not None
            and state == "queued"
            and job_id not in grouped.get(group.decode(), [])
        ):
            issues.append(f"{keys.queue}: {job_id} is queued but not in its group")
    records = {
        k.decode(): v.decode().split(",") for k, v in client.hgetall(keys.group_records).items()
    }
    for key in set(grouped) | set(active):
        if key not in records:
            issues.append(f"{keys.queue}: group {key!r} has jobs but no record")
    # The ring's sentinel (a NUL then 64 dashes, scored +inf) only keeps its encoding.
    ring = {
        m.decode(): s
        for m, s in client.zrange(keys.ring, 0, -1, withscores=True)
        if not m.startswith(b"\x00")
    }
    for key in records:
        record = records[key]
        if len(record) != 8:
            issues.append(f"{keys.queue}: group {key!r} has a garbled record {record!r}")
            continue
        running, turn = record[3], record[4]
        if int(running or 0) != active[key]:
            issues.append(
                f"{keys.queue}: group {key!r} counts {running!r} active, {active[key]} are"
            )
        concurrency = int(record[0])
        eligible = bool(grouped.get(key)) and (concurrency == 0 or active[key] < concurrency)
        if eligible != (key in ring):
            issues.append(f"{keys.queue}: group {key!r} is {'' if key in ring else 'not '}ringed")
        elif key in ring and turn is not None and int(float(turn) * 1e6 + 0.5) != ring[key]:
            issues.append(f"{keys.queue}: group {key!r} turns at {turn!r}, ringed at {ring[key]}")
    for key in set(ring) - set(records):
        issues.append(f"{keys.queue}: group {key!r} is ringed without a record")
    return issues


def _dedup_problems(
    client: redis.Redis | redis.RedisCluster, keys: QueueKeys, hashes: set[str]
) -> list[str]:
    """Dedup records never outlive their jobs: every job that took a key still exists, and every
    record's holder is a job that took that key."""
    issues: list[str] = []
    taken = {k.decode(): v.decode() for k, v in client.hgetall(keys.dedup_jobs).items()}
    issues += [
        f"{keys.queue}: deleted job {job_id} still has dedup key {key!r}"
        for job_id, key in taken.items()
        if job_id not in hashes
    ]
    for key, record in client.hgetall(keys.dedup).items():
        holder = record.decode().split("|", 2)[2]
        if taken.get(holder) != key.decode():
            issues.append(f"{keys.queue}: dedup key {key.decode()!r} names {holder}, not its taker")
    return issues


def _expiry_problems(
    client: redis.Redis | redis.RedisCluster,
    keys: QueueKeys,
    jobs: dict[str, tuple[str | None, int | None]],
) -> list[str]:
    issues: list[str] = []
    entries = {m.decode(): s for m, s in client.zrange(keys.expiring, 0, -1, withscores=True)}
    for member, score in entries.items():
        job_id = member[SEQ:]
        state, seq = jobs.get(job_id, (None, None))
        expires = client.hget(keys.job(job_id), "ex")
        if state not in ("completed", "failed") or seq is None or int(member[:SEQ]) != seq:
            issues.append(f"{keys.queue}: {member} is in the expiring set but is {state} at {seq}")
        elif expires is None or float(expires) != score:
            issues.append(f"{keys.queue}: {job_id} expires at {expires!r}, its entry at {score}")
    for job_id, (state, seq) in jobs.items():
        expires = client.hget(keys.job(job_id), "ex")
        if expires is not None and f"{seq or 0:016d}{job_id}" not in entries:
            issues.append(f"{keys.queue}: {job_id} ({state}) expires but has no expiring entry")
    return issues


def _index_problems(
    client: redis.Redis | redis.RedisCluster,
    keys: QueueKeys,
    jobs: dict[str, tuple[str | None, int | None]],
    in_set: set[str],
) -> list[str]:
    """The listing indexes against the jobs: queued jobs are indexed only in the queued set
    (``in_set``), the ready list being in seq order itself."""
    issues: list[str] = []
    if client.exists(keys.by_seq(JobState.ACTIVE)):
        issues.append(f"{keys.queue}: active jobs have an index")
    for state in INDEXED_STATES:
        indexed = {
            m.decode(): int(s) for m, s in client.zrange(keys.by_seq(state), 0, -1, withscores=True)
        }
        for job_id, seq in indexed.items():
            if job_id not in jobs:
                issues.append(f"{keys.queue}: {job_id} is in the {state} index but has no hash")
            elif jobs[job_id] != (state.value, seq):
                issues.append(
                    f"{keys.queue}: {job_id} is in the {state} index at {seq}, but is "
                    f"{jobs[job_id][0]} at {jobs[job_id][1]}"
                )
        for job_id, (job_state, _) in jobs.items():
            if state is JobState.QUEUED and job_id not in in_set:
                if job_id in indexed:
                    issues.append(f"{keys.queue}: {job_id} is in the ready list and the index")
            elif job_state == state.value and job_id not in indexed:
                issues.append(f"{keys.queue}: {job_id} is {state} but not in its index")
    return issues


def _glob(text: str) -> str:
    """``text`` as a literal SCAN pattern (the hash tag's braces are fine, brackets are not)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
