"""The jobs a worker has leased ahead of a free slot, waiting in fetch order (see
:mod:`conveyor.runtime.prefetch` for when a worker leases ahead; the runner starts them).

A job waits here only while every slot is busy. Should the running jobs stop freeing slots (a
handler stuck on an outage, with no timeout), a job that waited :data:`PATIENCE` seconds is
given up by the runner (handed back for other workers), so it is never held from them for long.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Final

from conveyor.drivers.records import JobRecord

# How long a job may wait here for a slot: a hundred times the run time under which a worker
# leases ahead at all, so only slots that stopped freeing reach it.
PATIENCE: Final = 1.0


class _Waiting:
    __slots__ = ("record", "since")

    def __init__(self, record: JobRecord, since: float) -> None:
        self.record = record
        self.since = since


class LeasedAhead:
    """Jobs leased ahead, oldest first; each with when it began to wait (monotonic)."""

    def __init__(self, patience: float = PATIENCE) -> None:
        self.patience = patience
        self._waiting: collections.deque[_Waiting] = collections.deque()
        # How many attempts of each job wait here: a job that has none (the usual case, asked
        # once per lease and per cancel) is answered without a scan.
        self._jobs: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._waiting)

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __iter__(self) -> Iterator[JobRecord]:
        return (w.record for w in self._waiting)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def add(self, record: JobRecord) -> None:
        self._waiting.append(_Waiting(record, time.monotonic()))
        self._jobs[record.id] += 1

    def pop(self) -> JobRecord:
        """The job that has waited longest."""
        return self._gone(self._waiting.popleft().record)

    def take_all(self) -> list[JobRecord]:
        records = [w.record for w in self._waiting]
        self._waiting.clear()
        self._jobs.clear()
        return records

    def remove(
        self, job_id: str, *, token: str | None = None, other_than: str | None = None
    ) -> list[JobRecord]:
        """Take out the attempts of ``job_id`` (only the one with ``token``, when given; all
        but the one with ``other_than``, when given); the ones taken out."""
        taken: list[JobRecord] = []
        kept: collections.deque[_Waiting] = collections.deque()
        for waiting in self._waiting:
            record = waiting.record
            if (
                record.id == job_id
                and (token is None or record.lease_token == token)
                and (other_than is None or record.lease_token != other_than)
            ):
                taken.append(self._gone(record))
            else:
                kept.append(waiting)
        if taken:
            self._waiting = kept
        return taken

    def overdue(self, now: float) -> list[JobRecord]:
        """Take out the jobs that have waited ``patience`` or longer by ``now``."""
        overdue: list[JobRecord] = []
        while self._waiting and now - self._waiting[0].since >= self.patience:
            overdue.append(self._gone(self._waiting.popleft().record))
        return overdue

    def next_overdue(self) -> float | None:
        """When (monotonic) the oldest job will have waited ``patience``; None if none."""
        return self._waiting[0].since + self.patience if self._waiting else None

    def _gone(self, record: JobRecord) -> JobRecord:
        """Count ``record`` out (it has just been taken out of the line)."""
        left = self._jobs[record.id] - 1
        if left:
            self._jobs[record.id] = left
        else:
            del self._jobs[record.id]
        return record
