"""Reading across queues: each queue lives in its own slot, so an operation that spans queues
reads each one, then picks what the reference model would have picked in one step."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence

from conveyor.backends.redis import _commands as commands
from conveyor.backends.redis._connection import Client
from conveyor.backends.redis._keys import QueueKeys
from conveyor.drivers.records import JobState

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
            commands.oldest_members(client, keys.set_of(state), bound, limit, inclusive=inclusive)
            for state, keys in reads
        )
    )
    merged = [
        (score, commands.member_seq(member), state, keys, member)
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


async def earliest_expiring(
    client: Client, queues: Sequence[QueueKeys], bound: float, limit: int
) -> list[tuple[QueueKeys, list[bytes]]]:
    """The first ``limit`` entries of every queue's expiring set scored up to ``bound``, by
    expiry then sequence number (the reference model's order), grouped by queue."""
    replies = await asyncio.gather(
        *(
            commands.oldest_members(client, keys.expiring, bound, limit, inclusive=True)
            for keys in queues
        )
    )
    merged = [
        (score, commands.member_seq(member), keys, member)
        for keys, members in zip(queues, replies, strict=True)
        for score, member in members
    ]
    groups: dict[str, tuple[QueueKeys, list[bytes]]] = {}
    for _, _, keys, member in heapq.nsmallest(limit, merged, key=lambda m: (m[0], m[1])):
        groups.setdefault(keys.queue, (keys, []))[1].append(member)
    return list(groups.values())
