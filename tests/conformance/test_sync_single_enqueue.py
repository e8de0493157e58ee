"""``SyncQueue.enqueue`` of one job, on every backend: written from the caller's thread where the
driver can (Redis, SQLite), through the portal's loop otherwise, with and without coalescing;
each path gives the caller the same handle, duplicate flag and error as ``enqueue_many``."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from conveyor import InsertStatus, JobState, PayloadValidationError, Queue, SyncQueue, job
from conveyor.backends.registry import driver_for_url


class Letter(BaseModel):
    to: str


letter = job("sync_single.letter", Letter)


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "alone"])
def test_one_job_gets_its_own_handle_duplicate_flag_and_error(
    backend_url: str, coalesce: bool
) -> None:
    with SyncQueue(Queue(driver_for_url(backend_url), coalesce=coalesce)) as queue:
        first = queue.enqueue(letter, Letter(to="ada"), job_id="letter-1")
        assert (first.id, first.duplicate, first.outcome) == (
            "letter-1",
            False,
            InsertStatus.INSERTED,
        )
        again = queue.enqueue(letter, Letter(to="bob"), job_id="letter-1")
        assert (again.id, again.duplicate, again.outcome) == (
            "letter-1",
            True,
            InsertStatus.DUPLICATE,
        )
        fresh = queue.enqueue(letter, Letter(to="cy"))
        assert not fresh.duplicate and fresh.id != "letter-1"
        with pytest.raises(PayloadValidationError):
            queue.enqueue(letter, Letter.model_construct())  # no "to": refused
        # The first payload was kept, the duplicate's dropped; the refused job wrote nothing.
        info = queue.get("letter-1")
        assert info is not None and info.state == JobState.QUEUED
        assert info.payload == {"to": "ada"}
        assert queue.counts()[JobState.QUEUED] == 2


def test_after_close_one_job_is_refused_as_before(backend_url: str) -> None:
    queue = SyncQueue(Queue(driver_for_url(backend_url)))
    queue.enqueue(letter, Letter(to="ada"))
    queue.close()
    with pytest.raises(RuntimeError, match="closed"):
        queue.enqueue(letter, Letter(to="bob"))
