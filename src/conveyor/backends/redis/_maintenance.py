"""What the maintenance leader and operators do across queues: find expired leases and apply
the rescuer's decisions, promote due jobs, apply retention, purge.

Each reads every queue, picks what the reference model would pick in one step (see
:mod:`._across`), then applies each queue's share with that queue's script, which checks again
what it was given (a job may have moved on meanwhile). Every step is bounded: by its ``limit``,
and by the batch size of the scripts (:data:`._stubs.BATCH`) or :data:`PURGE_CHUNK`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from conveyor.backends.redis import _across
from conveyor.backends.redis import _commands as commands
from conveyor.backends.redis import _coordination as coord
from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._records import decode_job
from conveyor.backends.redis._store import Store
from conveyor.drivers.common import LOST_WHILE_CANCELLING, cancelled_error
from conveyor.drivers.records import (
    TERMINAL_STATES,
    JobRecord,
    JobState,
    PurgeParams,
    RescueJob,
    Retention,
    TransitionResult,
    TransitionStatus,
)

PURGE_CHUNK: Final = 1000  # entries one purge call removes


async def job_expired(store: Store, limit: int, now: float | None) -> list[JobRecord]:
    if limit <= 0:
        return []
    client = store.client
    at = await store.now(now)
    queues = await store.known_keys()
    chosen = await _across.oldest(client, queues, [JobState.ACTIVE], at, limit, inclusive=True)
    wanted = [(keys, commands.member_id(member)) for *_, keys, member in chosen]
    expired: list[JobRecord] = []
    for (keys, _), row, (*_, member) in zip(
        wanted, await commands.read_jobs(client, wanted), chosen, strict=True
    ):
        if row is None:
            # The job's hash is gone (deleted by hand): its member would take a place in
            # every later look at the expired leases. No job of that id can own the member
            # again (a new job gets a new sequence number), so removing it is safe.
            await client.execute_command("ZREM", keys.active, member)
        elif not isinstance(row, commands.Unreadable):
            job = decode_job(keys.queue, row, strict=False)
            if job.state is JobState.ACTIVE and job.lease_token is not None:
                expired.append(job)
    return expired


async def job_rescue_many(
    store: Store, rescues: Sequence[RescueJob], now: float | None
) -> list[TransitionResult]:
    statuses = [TransitionStatus.NOT_FOUND] * len(rescues)
    text = cancelled_error(LOST_WHILE_CANCELLING)
    for keys, positions in await store.group([(r.job_id, r.queue) for r in rescues]):
        batch = [rescues[n] for n in positions]
        replies = await stubs.rescue(store.client, keys, batch, cancelled_error=text, now=now)
        for n, status in zip(positions, replies, strict=True):
            statuses[n] = status
    return [TransitionResult(r.job_id, s) for r, s in zip(rescues, statuses, strict=True)]


async def job_promote_due(store: Store, limit: int, now: float | None) -> int:
    if limit <= 0:
        return 0
    at = await store.now(now)
    queues = await store.known_keys()
    due = [JobState.SCHEDULED, JobState.RETRYING]
    chosen = await _across.oldest(store.client, queues, due, at, limit, inclusive=True)
    moved = 0
    for keys, pairs in _across.by_queue(chosen):
        moved += await stubs.promote(store.client, keys, pairs, at)
    return moved


async def job_prune_finished(
    store: Store, retention: Retention, limit: int, now: float | None
) -> int:
    if limit <= 0:
        return 0
    client = store.client
    at = await store.now(now)
    queues = await store.known_keys()
    removed = 0
    # First the jobs whose own retention expired, earliest first across queues.
    for keys, members in await _across.earliest_expiring(client, queues, at, limit):
        removed += await stubs.prune_expired(client, keys, members, at)
    ages = (
        (JobState.COMPLETED, retention.completed_max_age),
        (JobState.FAILED, retention.failed_max_age),
        (JobState.CANCELLED, retention.cancelled_max_age),
    )
    for state, max_age in ages:
        if max_age is None or removed >= limit:
            continue
        bound = at - max_age
        chosen = await _across.oldest(
            client, queues, [state], bound, limit - removed, inclusive=False
        )
        for keys, pairs in _across.by_queue(chosen):
            members = [member for _, member in pairs]
            removed += await stubs.prune_members(client, keys, state, members)
    if retention.completed_max_count is not None:
        for keys in queues:
            if removed >= limit:
                break
            removed += await stubs.prune_trim(
                client, keys, JobState.COMPLETED, retention.completed_max_count, limit - removed
            )
    # Then, within what is left of the limit, the records of idle groups (not counted among
    # the jobs deleted).
    budget = limit - removed
    for keys in queues:
        if budget <= 0:
            break
        budget -= await coord.group_prune(client, keys, budget, at)
    return removed


async def job_purge(store: Store, params: PurgeParams) -> int:
    if not params.states:
        return 0
    deleted = 0
    for keys in await store.known_keys(params.queue):
        for state in dict.fromkeys(params.states):
            if params.finished_before is not None and state not in TERMINAL_STATES:
                continue  # unfinished jobs have no finish time to compare
            while True:
                n, removed = await stubs.purge(
                    store.client, keys, state, params.finished_before, PURGE_CHUNK
                )
                deleted += n
                if removed < PURGE_CHUNK:
                    break
    return deleted
