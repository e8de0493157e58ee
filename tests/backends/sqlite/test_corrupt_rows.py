"""A row written by something other than Conveyor (a bad migration, a manual edit, a foreign
producer) fails only its own job, with an error naming what was wrong."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from conveyor import JobContext, JobState, Queue, Worker, job
from tests.conformance.worker.helpers import Num, fast_config, wait_state

count = job("test.count", Num, result=int)


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        (b"\xff\xfe not utf-8", "PayloadValidationError"),
        (b"{not json", "Invalid JSON"),
        (b"[1, 2, 3]", "PayloadValidationError"),
        (b'{"n": "seven"}', "n: Input should be a valid integer"),
    ],
)
async def test_a_corrupt_stored_payload_fails_only_its_job(
    tmp_path: Path, garbage: bytes, expected: str
) -> None:
    url = f"sqlite:///{tmp_path / 'corrupt.db'}"
    queue = Queue.from_url(url)
    worker = Worker(queue, config=fast_config())
    seen: list[int] = []

    @worker.handles(count)
    async def handle(payload: Num, ctx: JobContext) -> int:
        seen.append(payload.n)
        return payload.n

    bad = await queue.enqueue(count, Num(n=1))
    with sqlite3.connect(tmp_path / "corrupt.db") as conn:
        conn.execute("UPDATE conveyor_job SET payload = ? WHERE id = ?", (garbage, bad.id))
    good = await queue.enqueue(count, Num(n=2))

    task = asyncio.create_task(worker.run())
    try:
        failed = await wait_state(queue, bad.id, JobState.FAILED)
        assert await good.result(timeout=10) == 2
    finally:
        worker.stop(grace=0)
        await asyncio.wait_for(task, 10)
        await queue.close()
    assert failed.attempt == 1  # permanent: retrying cannot fix stored bytes
    assert failed.error is not None and expected in failed.error
    assert "test.count" in failed.error
    assert seen == [2]


flaky = job("test.flaky_history", Num, result=int, attempts=2)


@pytest.mark.parametrize("history", ["{not json", '{"an": "object"}', "42"])
async def test_a_corrupt_error_history_starts_afresh_and_wedges_nothing(
    tmp_path: Path, history: str
) -> None:
    """Before: appending to a history that was not a JSON array failed the statement with
    "malformed JSON", which read as the database being unavailable: the completer retried it
    for ever and every later outcome waited behind it."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    queue = Queue.from_url(url)
    worker = Worker(queue, config=fast_config())

    @worker.handles(flaky)
    async def handle(payload: Num, ctx: JobContext) -> int:
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")
        return payload.n

    @worker.handles(count)
    async def handle_count(payload: Num, ctx: JobContext) -> int:
        return payload.n

    bad = await queue.enqueue(flaky, Num(n=1))
    with sqlite3.connect(tmp_path / "history.db") as conn:
        conn.execute("UPDATE conveyor_job SET errors = ? WHERE id = ?", (history, bad.id))
    task = asyncio.create_task(worker.run())
    try:
        assert await bad.result(timeout=10) == 1
        later = [await queue.enqueue(count, Num(n=n)) for n in range(3)]
        assert [await h.result(timeout=10) for h in later] == [0, 1, 2]
        info = await queue.get(bad.id)
    finally:
        worker.stop(grace=0)
        await asyncio.wait_for(task, 10)
        await queue.close()
    assert info is not None
    assert [(e.attempt, e.error[:30]) for e in info.errors] == [
        (1, "ValueError: first attempt fail")
    ]


@pytest.mark.parametrize("headers", ["{not json", "[1, 2]", '{"n": 1}', b"\xff\xfe"])
async def test_corrupt_stored_headers_read_as_none_and_the_job_runs(
    tmp_path: Path, headers: str | bytes
) -> None:
    url = f"sqlite:///{tmp_path / 'headers.db'}"
    queue = Queue.from_url(url)
    worker = Worker(queue, config=fast_config())

    @worker.handles(count)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n

    handle_ = await queue.enqueue(count, Num(n=5))
    with sqlite3.connect(tmp_path / "headers.db") as conn:
        conn.execute("UPDATE conveyor_job SET headers = ? WHERE id = ?", (headers, handle_.id))
    listed = await queue.get(handle_.id)
    assert listed is not None and listed.headers == {}
    task = asyncio.create_task(worker.run())
    try:
        assert await handle_.result(timeout=10) == 5
    finally:
        worker.stop(grace=0)
        await asyncio.wait_for(task, 10)
        await queue.close()
