"""The memory driver's deletion of finished jobs and its per-minute throughput counters."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from conveyor.backends.memory._store import MemoryStore
from conveyor.drivers.common import STATS_KEEP_MINUTES, check_ids, check_stats, resolve_now
from conveyor.drivers.records import (
    TERMINAL_STATES,
    ChangeResult,
    ChangeStatus,
    QueueStats,
)


class InspectOperations:
    """``job_delete_many``, ``stats_add`` and ``stats_read`` of
    :class:`~conveyor.backends.memory.driver.MemoryDriver`."""

    _store: MemoryStore

    async def job_delete_many(self, ids: Sequence[str]) -> list[ChangeResult]:
        check_ids(ids)
        s = self._store
        results: list[ChangeResult] = []
        with s.lock:
            for job_id in ids:
                job = s.jobs.get(job_id)
                if job is None:
                    results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
                elif job.state not in TERMINAL_STATES:
                    results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, job.state))
                else:
                    s.delete(job_id)
                    results.append(ChangeResult(job_id, ChangeStatus.OK, None))
        return results

    async def stats_add(self, samples: Sequence[QueueStats], *, now: float | None = None) -> None:
        check_stats(samples)
        oldest = int(resolve_now(now) // 60) - STATS_KEEP_MINUTES
        s = self._store
        with s.lock:
            for sample in samples:
                key = (sample.queue, sample.minute)
                had = s.stats.get(key)
                if had is None:
                    s.stats[key] = sample
                else:
                    s.stats[key] = dataclasses.replace(
                        had,
                        completed=had.completed + sample.completed,
                        retried=had.retried + sample.retried,
                        failed=had.failed + sample.failed,
                    )
            for key in [k for k in s.stats if k[1] < oldest]:
                del s.stats[key]

    async def stats_read(
        self, queues: Sequence[str] | None, *, since_minute: int
    ) -> list[QueueStats]:
        wanted = None if queues is None else set(queues)
        with self._store.lock:
            found = [
                stats
                for (queue, minute), stats in self._store.stats.items()
                if minute >= since_minute and (wanted is None or queue in wanted)
            ]
        return sorted(found, key=lambda b: (b.queue, b.minute))
