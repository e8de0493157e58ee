"""Deleting finished jobs and the per-minute throughput counters on PostgreSQL:
``job_delete_many``, ``stats_add`` and ``stats_read``, each one statement of ``queries.sql``
(the counters live in ``conveyor_stats``, migrations/0007_headers_stats.sql)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from conveyor._errors import InvalidArgument
from conveyor.backends.postgres._records import Row
from conveyor.drivers.common import STATS_KEEP_MINUTES, check_ids, check_now, check_stats
from conveyor.drivers.records import (
    TERMINAL_STATES,
    ChangeResult,
    ChangeStatus,
    JobState,
    QueueStats,
)

# The most old buckets one stats_add deletes: a worker adds every few seconds, so a few
# hundred a minute go at most, far more than the queues' buckets that age out in a minute.
STATS_DROP_LIMIT: Final = 100

_MINUTE_BOUND: Final = 2**62  # a since_minute beyond bigint reads as everything or nothing


def delete_results(ids: Sequence[str], found: Sequence[Row]) -> list[ChangeResult]:
    """Each id's result, from the states ``job_delete_many`` found (rows of ``id`` and
    ``state``, read before it deleted the finished ones). An id given twice finds, the second
    time, what its first mention left: nothing, if that deleted it."""
    states = {row["id"]: JobState(row["state"]) for row in found}
    results: list[ChangeResult] = []
    seen: set[str] = set()
    for job_id in ids:
        state = states.get(job_id)
        if state is None or (job_id in seen and state in TERMINAL_STATES):
            results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
        elif state in TERMINAL_STATES:
            results.append(ChangeResult(job_id, ChangeStatus.OK, None))
        else:
            results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, state))
        seen.add(job_id)
    return results


def stats_of(row: Row) -> QueueStats:
    return QueueStats(
        queue=row["queue"],
        minute=int(row["minute"]),
        completed=int(row["completed"]),
        retried=int(row["retried"]),
        failed=int(row["failed"]),
    )


class InspectOperations:
    """``job_delete_many``, ``stats_add`` and ``stats_read`` of
    :class:`~conveyor.backends.postgres.driver.PostgresDriver`."""

    _rows: Callable[[str, Mapping[str, Any]], Awaitable[list[Row]]]

    async def job_delete_many(self, ids: Sequence[str]) -> list[ChangeResult]:
        """One statement. Sent again after its reply was lost (a connection that failed), it
        reports the jobs the first try deleted as not found: they are gone either way."""
        check_ids(ids)
        if not ids:
            return []
        found = await self._rows("job_delete_many", {"ids": list(ids)})
        return delete_results(ids, found)

    async def stats_add(self, samples: Sequence[QueueStats], *, now: float | None = None) -> None:
        check_now(now)
        check_stats(samples)
        args = {
            "now": now,
            "keep": STATS_KEEP_MINUTES,
            "limit": STATS_DROP_LIMIT,
            "queues": [s.queue for s in samples],
            "minutes": [s.minute for s in samples],
            "completed": [s.completed for s in samples],
            "retried": [s.retried for s in samples],
            "failed": [s.failed for s in samples],
        }
        await self._rows("stats_add", args)

    async def stats_read(
        self, queues: Sequence[str] | None, *, since_minute: int
    ) -> list[QueueStats]:
        since = _whole_minute(since_minute)
        if queues is not None:
            # A name with a NUL names no bucket: PostgreSQL's text could not have stored one.
            queues = [q for q in dict.fromkeys(queues) if "\x00" not in q]
            if not queues:
                return []
        args = {"queues": queues, "since": since, "keep": STATS_KEEP_MINUTES}
        return [stats_of(row) for row in await self._rows("stats_read", args)]


def _whole_minute(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"since_minute must be a whole number of minutes, got {value!r}")
    return max(-_MINUTE_BOUND, min(value, _MINUTE_BOUND))
