"""Waiting on results, missing jobs and double registrations say what went wrong."""

from __future__ import annotations

import re
import uuid

import pytest

from conveyor import (
    DuplicateHandler,
    JobContext,
    JobNotFound,
    Queue,
    ResultTimeout,
    Worker,
    job,
)
from tests.conformance.worker.helpers import Num

echo = job("handles.echo", Num, result=int)


async def test_result_times_out_naming_the_job_and_its_state() -> None:
    async with Queue.from_url(f"memory://{uuid.uuid4().hex}") as queue:
        handle = await queue.enqueue(echo, Num(n=1), job_id="never-run")
        with pytest.raises(
            ResultTimeout, match=re.escape("job 'never-run' still queued after waiting 0.05s")
        ):
            await handle.result(timeout=0.05)


async def test_a_missing_job_is_job_not_found() -> None:
    async with Queue.from_url(f"memory://{uuid.uuid4().hex}") as queue:
        handle = queue.handle(echo, "gone")
        with pytest.raises(JobNotFound, match="job 'gone' not found"):
            await handle.info()
        assert await queue.get("gone") is None


def test_a_second_handler_for_one_job_is_refused() -> None:
    worker = Worker(Queue.from_url("memory://"))

    @worker.handles(echo)
    async def first(payload: Num, ctx: JobContext) -> int:
        return 1

    with pytest.raises(DuplicateHandler, match=re.escape("job 'handles.echo' already has handler")):

        @worker.handles(echo)
        async def second(payload: Num, ctx: JobContext) -> int:
            return 2
