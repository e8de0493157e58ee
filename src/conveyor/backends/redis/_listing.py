"""Reading jobs for people: by id, pages of a listing, counts.

A listing reads, for each (queue, state) asked for, the newest entries of that state's index
below the cursor (one script call per queue, all its states at once), merges them newest first
across states and queues, and reads the page's jobs in one pipelined round trip: a page costs
about its size plus a logarithm per (queue, state), however many jobs there are (a page larger
than :data:`PAGE` takes one more call per :data:`PAGE` jobs). A ``name`` filter is the
exception: it reads past the jobs of other names, in slices of :data:`SCAN` index entries per
state and call, so that no call keeps the server busy for long.

A key that holds something other than a job hash (a foreign producer's) makes ``job_get_many``
raise :class:`~._records.CorruptJob` naming it; a listing skips it with a warning, so that the
rest of the queue can still be inspected.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from typing import Final

from conveyor.backends.redis import _commands as commands
from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._records import decode_job, not_a_job
from conveyor.backends.redis._store import Store
from conveyor.drivers.records import JobRecord, JobState, ListParams, QueueInfo

log = logging.getLogger("conveyor.redis")

SCAN: Final = 500  # index entries a name filter reads per state and call
PAGE: Final = 1000  # matches one call returns per state at most (a larger limit takes more calls)

Found = tuple[int, str, QueueKeys]  # (seq, id, queue)


async def job_get_many(store: Store, ids: list[str]) -> list[JobRecord | None]:
    if not ids:
        return []
    queues = await store.known_keys()
    unique = list(dict.fromkeys(ids))
    wanted = [(keys, job_id) for job_id in unique for keys in queues]
    found: dict[str, JobRecord] = {}
    for (keys, job_id), row in zip(
        wanted, await commands.read_jobs(store.client, wanted), strict=True
    ):
        if isinstance(row, commands.Unreadable):
            raise not_a_job(job_id, keys.queue, row.key, row.error)
        if row is not None and job_id not in found:
            found[job_id] = decode_job(keys.queue, row, strict=False)
    return [found.get(job_id) for job_id in ids]


async def job_list(store: Store, params: ListParams) -> list[JobRecord]:
    if params.limit <= 0:
        return []
    states = tuple(dict.fromkeys(params.states or JobState))
    queues = await store.known_keys(params.queue)
    per_queue = await asyncio.gather(*(_newest(store, keys, states, params) for keys in queues))
    merged = heapq.merge(*per_queue, key=lambda found: found[0], reverse=True)
    chosen: list[Found] = []
    seen: set[str] = set()  # a job that moved between states while a name filter read on
    for found in merged:
        if found[1] not in seen:
            seen.add(found[1])
            chosen.append(found)
            if len(chosen) == params.limit:
                break
    wanted = [(keys, job_id) for _, job_id, keys in chosen]
    jobs: list[JobRecord] = []
    for (keys, job_id), row in zip(
        wanted, await commands.read_jobs(store.client, wanted), strict=True
    ):
        if isinstance(row, commands.Unreadable):
            log.warning(
                "listing skips job %r of queue %r: %s",
                job_id,
                keys.queue,
                not_a_job(job_id, keys.queue, row.key, row.error),
                extra={"event": "job_list", "job_id": job_id, "queue": keys.queue},
            )
            continue
        if row is None:
            continue  # deleted since the index was read
        job = decode_job(keys.queue, row, strict=False)
        if job.state in states:  # else it moved on since: as if read a moment later
            jobs.append(job)
    return jobs


async def _newest(
    store: Store, keys: QueueKeys, states: tuple[JobState, ...], params: ListParams
) -> list[Found]:
    """The newest ``params.limit`` matches of ``states`` of one queue, newest first."""
    limit = params.limit
    per_call = min(limit, PAGE)
    found: dict[JobState, list[Found]] = {state: [] for state in states}
    pending: list[tuple[JobState, int | None]] = [(state, params.before_seq) for state in states]
    while pending:
        listed = await stubs.list_newest(
            store.client, keys, pending, limit=per_call, name=params.name, scan=SCAN
        )
        again: list[tuple[JobState, int | None]] = []
        for (state, _), part in zip(pending, listed, strict=True):
            found[state] += [(seq, job_id, keys) for seq, job_id in part.matches]
            if len(found[state]) >= limit:
                continue
            # Not enough yet: read on below what was read (each slice is older than the one
            # before, so the state's range stays newest first). A full page of matches goes on
            # below its last one; a name filter that read a full slice, below that slice.
            if len(part.matches) == per_call:
                again.append((state, part.matches[-1][0]))
            elif part.next_before is not None:
                again.append((state, part.next_before))
        pending = again
    merged = heapq.merge(*found.values(), key=lambda item: item[0], reverse=True)
    return list(itertools.islice(merged, limit))


async def job_count_by_state(store: Store, queue: str | None) -> dict[JobState, int]:
    totals = dict.fromkeys(JobState, 0)
    queues = await store.known_keys(queue)
    for queue_state in await commands.queue_states(store.client, queues):
        for state, n in queue_state.counts.items():
            totals[state] += n
    return totals


async def queue_list(store: Store) -> list[QueueInfo]:
    names = await store.known()
    states = await commands.queue_states(store.client, [store.keys(name) for name in names])
    return [
        QueueInfo(name, state.paused, state.counts)
        for name, state in zip(names, states, strict=True)
    ]
