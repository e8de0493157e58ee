"""Deleting finished jobs and the per-minute throughput counters on Redis: ``job_delete_many``,
``stats_add`` and ``stats_read``.

A deletion is one script per queue (one slot; see ``lua/job_delete_many.lua``), which reads
every id's state before it deletes anything. The counters of a queue are one hash in its own
slot, ``{<prefix>:<queue>}:stats``, with a field per minute and count (see
``lua/stats_add.lua``): a worker's flush is one script per queue, which also drops the minutes
that became too old since the last flush. The shared set ``{<prefix>}:stats-queues`` names the
queues that have counters, for a reader who asks for every queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from conveyor.backends.redis import _coordination as coord
from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._store import Store
from conveyor.drivers.common import STATS_KEEP_MINUTES
from conveyor.drivers.records import ChangeResult, ChangeStatus, QueueStats

_COUNTS = {b"c": "completed", b"r": "retried", b"f": "failed"}


class Inspection:
    def __init__(self, store: Store) -> None:
        self._store = store
        # Queues this process put in the shared set: names are never removed from it, so each
        # is added once per process rather than on every flush.
        self._named: set[str] = set()

    async def delete_many(self, ids: Sequence[str]) -> list[ChangeResult]:
        results = [ChangeResult(job_id, ChangeStatus.NOT_FOUND, None) for job_id in ids]
        for keys, positions in await self._store.group([(job_id, None) for job_id in ids]):
            changes = await stubs.delete(self._store.client, keys, [ids[n] for n in positions])
            for n, change in zip(positions, changes, strict=True):
                results[n] = change
        return results

    async def stats_add(self, samples: Sequence[QueueStats], now: float | None) -> None:
        by_queue: dict[str, list[QueueStats]] = {}
        for sample in samples:
            by_queue.setdefault(sample.queue, []).append(sample)
        client = self._store.client
        unnamed = [queue for queue in by_queue if queue not in self._named]
        if unnamed:
            # Named before the counters are written: a reader of every queue finds them.
            await client.execute_command("SADD", self._store.ns.stats_queues, *unnamed)
            self._named.update(unnamed)
        await asyncio.gather(
            *(
                coord.stats_add(client, self._store.keys(queue), batch, STATS_KEEP_MINUTES, now)
                for queue, batch in by_queue.items()
            )
        )

    async def stats_read(self, queues: Sequence[str] | None, since_minute: int) -> list[QueueStats]:
        client = self._store.client
        if queues is None:
            members = await client.execute_command("SMEMBERS", self._store.ns.stats_queues)
            names = sorted(bytes(m).decode() for m in members)
        else:
            names = sorted(set(queues))
        if not names:
            return []
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.execute_command("HGETALL", self._store.keys(name).stats)
        found: list[QueueStats] = []
        for name, reply in zip(names, await pipe.execute(), strict=True):
            found += _buckets(name, reply, since_minute)
        return found


def _buckets(queue: str, reply: Any, since_minute: int) -> list[QueueStats]:
    """The buckets in a queue's hash (an HGETALL reply) from ``since_minute`` on, oldest first,
    at most STATS_KEEP_MINUTES of them (a hash holds no more unless minutes to come were added,
    by a host with a clock ahead)."""
    items = reply.items() if hasattr(reply, "items") else zip(reply[::2], reply[1::2], strict=True)
    counts: dict[int, dict[str, int]] = {}
    for field, value in items:
        minute_text, _, kind = bytes(field).partition(b":")
        if kind not in _COUNTS or not minute_text.isdigit():
            continue  # the 'pruned' marker
        minute = int(minute_text)
        if minute >= since_minute:
            counts.setdefault(minute, {})[_COUNTS[kind]] = int(value)
    minutes = sorted(counts)[:STATS_KEEP_MINUTES]
    return [QueueStats(queue, minute, **counts[minute]) for minute in minutes]
