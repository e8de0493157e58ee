"""Reading across queues: each queue lives in its own slot, so an operation that spans queues
reads each one, then picks what the reference model would have picked in one step."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence
from typing import Final

from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._connection import Client
from conveyor.backends.redis._keys import QueueKeys
from conveyor.drivers.records import JobState

SLICE: Final = 1000  # entries one call of a listing scan reads

# (score, sequence number, state, queue, member): one set member, and how it sorts.
Candidate = tuple[float, int, JobState, QueueKeys, bytes]


async def oldest(
    client: Client,
    queues: Sequence[QueueKeys],
    states: Sequence[JobState],
    bound: float,
    limit: int,
    *,
    inclusive: bool,
) -> list[Candidate]:
    """The first ``limit`` members of every queue's sets of ``states`` scored up to ``bound``,
    by score then sequence number (the reference model's order)."""
    reads = [(state, keys) for keys in queues for state in states]
    replies = await asyncio.gather(
        *(
            stubs.oldest_members(client, keys, state, bound, limit, inclusive=inclusive)
            for state, keys in reads
        )
    )
    merged = [
        (score, stubs.member_seq(member), state, keys, member)
        for (state, keys), members in zip(reads, replies, strict=True)
        for score, member in members
    ]
    return heapq.nsmallest(limit, merged, key=lambda m: (m[0], m[1]))


def by_queue(chosen: Sequence[Candidate]) -> list[tuple[QueueKeys, list[tuple[JobState, bytes]]]]:
    """The (state, member) pairs of ``chosen`` grouped by queue, in first-seen order."""
    groups: dict[str, tuple[QueueKeys, list[tuple[JobState, bytes]]]] = {}
    for _, _, state, keys, member in chosen:
        groups.setdefault(keys.queue, (keys, []))[1].append((state, member))
    return list(groups.values())


async def newest(
    client: Client,
    queues: Sequence[QueueKeys],
    states: Sequence[JobState],
    *,
    before_seq: int | None,
    name: str | None,
    limit: int,
) -> list[tuple[int, str, QueueKeys]]:
    """The ``limit`` jobs with the highest sequence numbers (below ``before_seq``, of ``name``)
    among ``states`` of ``queues``, newest first: every structure is scanned in slices, so that
    no single call blocks the server for long."""
    best: list[tuple[int, str, str]] = []  # a min-heap of the newest (seq, id, queue) so far
    seen: set[str] = set()  # a job that moved between structures during the scan
    by_name = {keys.queue: keys for keys in queues}
    for keys in queues:
        for source in stubs.list_sources(states):
            start = 0
            while start >= 0:
                start, found = await stubs.list_slice(
                    client,
                    keys,
                    source,
                    start=start,
                    count=SLICE,
                    before_seq=before_seq,
                    name=name,
                    top=limit,
                )
                for seq, job_id in found:
                    if job_id in seen:
                        continue
                    seen.add(job_id)
                    entry = (seq, job_id, keys.queue)
                    if len(best) < limit:
                        heapq.heappush(best, entry)
                    elif entry > best[0]:
                        heapq.heapreplace(best, entry)
    return [(seq, job_id, by_name[queue]) for seq, job_id, queue in sorted(best, reverse=True)]
