"""Dedup keys in the SQLite insert plan: the rules of :mod:`conveyor.drivers.common` applied
inside the insert's transaction (the write lock makes reading the holder and writing atomic)."""

from __future__ import annotations

from conveyor.backends.sqlite._groups import group_args
from conveyor.backends.sqlite._sql import QUERIES as Q
from conveyor.drivers.common import DedupHolder, dedup_decision, dedup_expiry
from conveyor.drivers.records import (
    DedupMode,
    InsertResult,
    InsertStatus,
    JobState,
    NewJob,
)
from conveyor.drivers.transactional import Plan, Statement


def dedup_step(new: NewJob, run_at: float, at: float) -> Plan[InsertResult | None]:
    """The result of ``new`` when its key is held (a duplicate, or a replaced debounce), else
    None: the caller inserts it (or finds its id taken) and, if inserted, runs
    :func:`take_step`."""
    assert new.dedup is not None
    rows = yield Statement(
        Q["job_insert_many__dedup_holder"], {"queue": new.queue, "key": new.dedup.key}
    )
    if not rows:
        return None
    job_id, mode, expires_at, name, state, started_at, holder_run_at = rows[0]
    holder = DedupHolder(
        job_id=job_id,
        name=name,
        mode=DedupMode(mode),
        expires_at=expires_at,
        state=JobState(state),
        started=started_at is not None,
        run_at=holder_run_at,
    )
    decision = dedup_decision(holder, new, at)
    if decision is InsertStatus.DUPLICATE:
        return InsertResult(job_id, decision, holder.state)
    if decision is InsertStatus.REPLACED:
        replaced = yield Statement(
            Q["job_insert_many__dedup_replace"],
            {
                "id": job_id,
                "payload": new.payload,
                "headers": new.headers,
                "run_at": run_at,
                **group_args(new),
            },
        )
        if replaced:
            return InsertResult(job_id, decision, JobState.SCHEDULED)
    return None


def take_step(new: NewJob, at: float) -> Plan[None]:
    """``new`` was inserted: it holds its key now."""
    assert new.dedup is not None
    yield Statement(
        Q["job_insert_many__dedup_take"],
        {
            "queue": new.queue,
            "key": new.dedup.key,
            "id": new.id,
            "mode": new.dedup.mode.value,
            "expires_at": dedup_expiry(new.dedup, at),
        },
    )
