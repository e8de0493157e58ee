"""Dedup keys of the in-memory driver: the reference model of the rules in
:mod:`conveyor.drivers.common` (a record per key, read lazily at the next insert with it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from conveyor.drivers.common import DedupHolder, dedup_decision, dedup_expiry
from conveyor.drivers.records import (
    DedupMode,
    InsertResult,
    InsertStatus,
    JobRecord,
    JobState,
    NewJob,
)


@dataclass(frozen=True, slots=True)
class DedupRecord:
    job_id: str
    mode: DedupMode
    expires_at: float | None


class DedupBook:
    """(queue, key) -> the job holding it, and each job's key, so that deleting a job deletes
    its record: records never outnumber jobs."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], DedupRecord] = {}
        self.key_of: dict[str, tuple[str, str]] = {}

    def insert(
        self, jobs: dict[str, JobRecord], new: NewJob, run_at: float, at: float
    ) -> InsertResult | None:
        """Apply ``new``'s dedup key: the result when it is a duplicate or replaced a waiting
        job's payload and run time, else None (the caller inserts it, then calls :meth:`take`)."""
        assert new.dedup is not None
        record = self.records.get((new.queue, new.dedup.key))
        job = None if record is None else jobs.get(record.job_id)
        holder = None
        if record is not None and job is not None:
            holder = DedupHolder(
                job_id=job.id,
                name=job.name,
                mode=record.mode,
                expires_at=record.expires_at,
                state=job.state,
                started=job.started_at is not None,
                run_at=job.run_at,
            )
        decision = dedup_decision(holder, new, at)
        if job is None or decision is InsertStatus.INSERTED:
            return None
        if decision is InsertStatus.REPLACED:
            # The new payload may belong to another group: the job moves with it (it waits
            # for its run time, so no group holds it yet).
            job = jobs[job.id] = dataclasses.replace(
                job,
                payload=new.payload,
                run_at=run_at,
                state=JobState.SCHEDULED,
                group=None if new.group is None else new.group.key,
                headers=new.headers,
            )
        return InsertResult(job.id, decision, job.state)

    def take(self, new: NewJob, at: float) -> None:
        """``new`` was inserted: it holds its key now."""
        assert new.dedup is not None
        where = (new.queue, new.dedup.key)
        previous = self.records.get(where)
        if previous is not None:
            self.key_of.pop(previous.job_id, None)
        self.records[where] = DedupRecord(new.id, new.dedup.mode, dedup_expiry(new.dedup, at))
        self.key_of[new.id] = where

    def forget(self, job_id: str) -> None:
        """Job ``job_id`` was deleted: the key it held is free, and its record gone."""
        where = self.key_of.pop(job_id, None)
        if where is not None:
            del self.records[where]
