"""Each lifecycle event is one log record carrying the job's name, id, attempt, duration and,
for failures, the error."""

from __future__ import annotations

import logging

import pytest

from conveyor import Fixed, JobContext, JobState, Queue, job
from tests.conformance.worker.helpers import Harness, Num, wait_state

wobbly = job("test.wobbly", Num, attempts=2, backoff=Fixed(0))


async def test_processing_retrying_failed_and_completed_are_logged_with_their_fields(
    harness: Harness, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.worker")
    worker = harness.worker()

    @worker.handles(wobbly)
    async def handle(payload: Num, ctx: JobContext) -> None:
        if payload.n == 0:
            raise ConnectionError("upstream said 503")

    harness.start(worker)
    doomed = await queue.enqueue(wobbly, Num(n=0), job_id="doomed")
    fine = await queue.enqueue(wobbly, Num(n=1), job_id="fine")
    await wait_state(queue, doomed.id, JobState.FAILED)
    await wait_state(queue, fine.id, JobState.COMPLETED)

    events = [
        (r.__dict__["event"], r.__dict__.get("job_id"), r.__dict__.get("attempt"))
        for r in caplog.records
        if r.__dict__.get("job_name") == "test.wobbly"
    ]
    assert ("processing", "doomed", 1) in events
    assert ("retrying", "doomed", 1) in events
    assert ("processing", "doomed", 2) in events
    assert ("failed", "doomed", 2) in events
    assert ("completed", "fine", 1) in events

    failed = next(r for r in caplog.records if r.__dict__.get("event") == "failed")
    assert failed.levelno == logging.ERROR
    assert "ConnectionError: upstream said 503" in failed.__dict__["error"]
    assert failed.__dict__["duration"] >= 0
    assert failed.__dict__["max_attempts"] == 2
    retrying = next(r for r in caplog.records if r.__dict__.get("event") == "retrying")
    assert retrying.levelno == logging.WARNING and "run_at" in retrying.__dict__
    completed = next(r for r in caplog.records if r.__dict__.get("event") == "completed")
    assert completed.__dict__["queue"] == "default"
