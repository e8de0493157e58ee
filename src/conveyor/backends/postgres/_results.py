"""What the PostgreSQL backend's batch statements report, read back as one result per input
in input order, with the reference model's answers for an id that repeats in a batch."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from conveyor.backends.postgres._pool import RETRY_SECONDS
from conveyor.backends.postgres._records import Row
from conveyor.drivers.common import CANCELLED_ERROR
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    FinishJob,
    InsertResult,
    InsertStatus,
    JobState,
    RescueJob,
    TransitionResult,
    TransitionStatus,
)

_STATES = {state.value: state for state in JobState}  # a dict read: thousands per bulk insert


def insert_results(rows: Sequence[tuple[str, str | None, str | None]]) -> list[InsertResult]:
    """From (id, the state it was inserted in, the state of the job that was there): the first
    row of an id that was inserted is ``inserted``; any other is a duplicate with the state it
    finds (the earlier row's when the id repeats in the batch)."""
    results: list[InsertResult] = []
    first: dict[str, JobState] = {}
    for job_id, inserted_state, existing_state in rows:
        earlier = first.get(job_id)
        if earlier is not None:
            results.append(InsertResult(job_id, InsertStatus.DUPLICATE, earlier))
        elif inserted_state is not None:
            first[job_id] = _STATES[inserted_state]
            results.append(InsertResult(job_id, InsertStatus.INSERTED, first[job_id]))
        else:
            first[job_id] = _STATES[existing_state or JobState.QUEUED.value]
            results.append(InsertResult(job_id, InsertStatus.DUPLICATE, first[job_id]))
    return results


def change_results(
    ids: Sequence[str],
    found: Sequence[Row],
    changes: Collection[JobState],
    to: JobState,
    *,
    cancels: bool,
) -> list[ChangeResult]:
    """A cancel's or a retry's result per id, from the states the statement found (rows of
    ``id`` and ``state``, read before it moved the jobs in ``changes`` to ``to``). An id given
    twice finds, the second time, the state its first mention left, as one change at a time
    would."""
    states = {row["id"]: JobState(row["state"]) for row in found}
    results: list[ChangeResult] = []
    seen: set[str] = set()
    for job_id in ids:
        state = states.get(job_id)
        if job_id in seen and state in changes:
            state = to
        seen.add(job_id)
        if state is None:
            results.append(ChangeResult(job_id, ChangeStatus.NOT_FOUND, None))
        elif state in changes:
            results.append(ChangeResult(job_id, ChangeStatus.OK, to))
        elif cancels and state is JobState.ACTIVE:
            results.append(ChangeResult(job_id, ChangeStatus.CANCEL_REQUESTED, state))
        else:
            results.append(ChangeResult(job_id, ChangeStatus.WRONG_STATE, state))
    return results


def finish_results(
    finishes: Sequence[FinishJob], rows: Sequence[Row]
) -> tuple[list[TransitionResult], dict[str, int]]:
    """Each finish's result, and how many jobs each queue completed. A finish that matched no
    row finds its job gone, owned by another attempt, or moved on under its very token by an
    earlier call whose reply was lost (then it is ``ok``)."""
    results: list[TransitionResult] = []
    completed: dict[str, int] = {}
    for finish, row in zip(finishes, rows, strict=True):
        if row["state"] is not None:
            status = TransitionStatus.OK
            if row["state"] == JobState.COMPLETED.value:
                completed[row["queue"]] = completed.get(row["queue"], 0) + 1
        elif row["current_state"] is None:
            status = TransitionStatus.NOT_FOUND
        elif row["current_state"] != "active" and row["current_token"] == finish.token:
            status = TransitionStatus.OK
        else:
            status = TransitionStatus.LEASE_LOST
        results.append(TransitionResult(finish.job_id, status))
    return results, completed


def rescue_results(rescues: Sequence[RescueJob], rows: Sequence[Row]) -> list[TransitionResult]:
    results: list[TransitionResult] = []
    for rescue, row in zip(rescues, rows, strict=True):
        if row["state"] is not None:
            status = TransitionStatus.OK
        else:
            status = TransitionStatus.LEASE_LOST if row["found"] else TransitionStatus.NOT_FOUND
        results.append(TransitionResult(rescue.job_id, status))
    return results


def as_if_waiting(row: Row) -> Row:
    """For a cancel run again after its reply was lost: a job an operator's cancel ended within
    the retries' time reads as the waiting job the first try found (and cancelled)."""
    recent = row["finished_at"] is not None and row["finished_at"] >= row["now"] - (
        RETRY_SECONDS + 1.0
    )
    if row["state"] == JobState.CANCELLED.value and row["error"] == CANCELLED_ERROR and recent:
        return {**row, "state": JobState.QUEUED.value}
    return row


def storable(ids: Sequence[str]) -> list[str]:
    """``ids`` without those holding a NUL character: PostgreSQL's text cannot store one, so no
    job has such an id (they are answered ``not_found``, as every other backend answers them),
    and sending one would fail the whole statement."""
    return [job_id for job_id in ids if "\x00" not in job_id]


def progress_results(rows: Sequence[Row]) -> list[TransitionResult]:
    """A progress update's result per row (one per update, in order)."""
    return [
        TransitionResult(
            row["id"],
            TransitionStatus.OK
            if row["written"]
            else TransitionStatus.LEASE_LOST
            if row["found"]
            else TransitionStatus.NOT_FOUND,
        )
        for row in rows
    ]
