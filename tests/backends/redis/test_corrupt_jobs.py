"""Bad data from the broker side: a job hash with garbage fields or an invalid JSON payload fails
that job permanently with a clear error, and the worker keeps going."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis

from conveyor import BackendError, JobContext, JobState, Queue, Worker, job
from conveyor.backends.redis._connection import parse_url
from conveyor.backends.redis._keys import QueueKeys
from tests.backends.redis.consistency import problems
from tests.conformance.worker.helpers import Num, fast_config, wait_state
from tests.conftest import redis_test_url

square = job("corrupt.square", Num, result=int, queue="emails")


async def handle_square(payload: Num, ctx: JobContext) -> int:
    return payload.n**2


@pytest.fixture
async def setup(redis_base_url: str) -> AsyncIterator[tuple[Queue, aredis.Redis, QueueKeys, str]]:
    url = redis_test_url(redis_base_url)
    target = parse_url(url)
    raw = aredis.Redis.from_url(target.client_url)
    async with Queue.from_url(url) as queue:
        yield queue, raw, QueueKeys(target.prefix, "emails"), url
    await raw.aclose()


async def run_worker_until(queue: Queue, *job_ids: str) -> dict[str, str | None]:
    """Run a worker until each of ``job_ids`` has finished; their errors by id."""
    worker = Worker(queue, config=fast_config())
    worker.register(square, handle_square)
    task = asyncio.create_task(worker.run())
    try:
        errors: dict[str, str | None] = {}
        for job_id in job_ids:
            info = await wait_state(queue, job_id, JobState.FAILED, JobState.COMPLETED)
            errors[job_id] = info.error if info.state is JobState.FAILED else None
        assert not task.done(), "the worker must keep going"
        return errors
    finally:
        worker.stop(grace=0)
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("p", b"urgent", "field priority"),
        ("m", None, "field max_attempts is missing"),
        ("q", b"not-a-number", "field seq"),
        ("n", b"\xff\xfe", "field name"),
        ("r", b"tomorrow", "field run_at"),
    ],
)
async def test_garbage_field_fails_only_that_job(
    setup: tuple[Queue, aredis.Redis, QueueKeys, str], field: str, value: bytes | None, named: str
) -> None:
    queue, raw, keys, url = setup
    bad = await queue.enqueue(square, Num(n=2), job_id="bad")
    if value is None:
        await raw.hdel(keys.job(bad.id), field)
    else:
        await raw.hset(keys.job(bad.id), field, value)
    good = await queue.enqueue(square, Num(n=3), job_id="good")

    errors = await run_worker_until(queue, bad.id, good.id)
    assert errors["good"] is None and await good.result(timeout=5) == 9
    error = errors["bad"]
    assert error is not None and error.startswith("CorruptJob: ")
    assert "'bad'" in error and "'emails'" in error and named in error
    info = await queue.get(bad.id)
    assert info is not None and info.state is JobState.FAILED and info.attempt == 1
    if field != "q":  # a garbled sequence number cannot name the job's set member faithfully
        assert problems(url) == []


async def test_invalid_json_payload_fails_permanently(
    setup: tuple[Queue, aredis.Redis, QueueKeys, str],
) -> None:
    queue, raw, keys, url = setup
    bad = await queue.enqueue(square, Num(n=2), job_id="bad-json")
    await raw.hset(keys.job(bad.id), "d", b'{"n": 2,,,')
    good = await queue.enqueue(square, Num(n=4), job_id="good")
    errors = await run_worker_until(queue, bad.id, good.id)
    error = errors["bad-json"]
    assert error is not None and error.startswith("PayloadValidationError")
    assert "corrupt.square" in error
    info = await queue.get(bad.id)
    assert info is not None and info.attempt == 1, "not retried"
    assert errors["good"] is None
    assert problems(url) == []


async def test_a_foreign_job_and_a_dangling_entry_do_not_stop_the_worker(
    setup: tuple[Queue, aredis.Redis, QueueKeys, str],
) -> None:
    queue, raw, keys, _url = setup
    # A foreign producer's job hash with nothing but garbage, and a list entry whose hash is
    # gone (deleted by hand), both in front of a good job.
    await raw.hset(keys.job("foreign"), mapping={"s": "queued", "junk": "yes"})
    await raw.rpush(keys.ready, "foreign", "vanished")
    good = await queue.enqueue(square, Num(n=5), job_id="good")
    errors = await run_worker_until(queue, "foreign", good.id)
    assert errors["good"] is None and await good.result(timeout=5) == 25
    error = errors["foreign"]
    assert error is not None and error.startswith("CorruptJob: ") and "'foreign'" in error
    assert await queue.get("vanished") is None
    assert await raw.llen(keys.ready) == 0


async def test_a_job_key_overwritten_with_a_string_is_named_by_get_and_skipped_by_listing(
    setup: tuple[Queue, aredis.Redis, QueueKeys, str], caplog: pytest.LogCaptureFixture
) -> None:
    queue, raw, keys, _url = setup
    await queue.enqueue(square, Num(n=1), job_id="good")
    await queue.enqueue(square, Num(n=2), job_id="clobbered")
    await raw.set(keys.job("clobbered"), "someone's string")  # still in the queue's index
    # `conveyor jobs show`: a clear error naming the key, not a WRONGTYPE traceback.
    with pytest.raises(BackendError) as refused:
        await queue.get("clobbered")
    message = str(refused.value)
    assert "CorruptJob" in message and keys.job("clobbered") in message
    assert "holds no job hash" in message
    # `conveyor jobs ls`: the rest of the queue, and a warning about the one it skipped.
    caplog.set_level(logging.WARNING, logger="conveyor.redis")
    assert [info.id for info in await queue.list_jobs(queue="emails")] == ["good"]
    assert any("'clobbered'" in r.getMessage() for r in caplog.records)
    assert (await queue.get("good")) is not None
