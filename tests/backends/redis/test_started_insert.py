"""``RedisDriver.start_insert`` (see :mod:`conveyor.drivers.started`): the insert script is
written before the call returns when the queue is known and a connection is up, its reply read
into the same results ``job_insert_many`` gives; a call it cannot send that way sends nothing;
and a sent write that meets a server without its scripts, or a refusal, ends as the usual
path ends."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
import redis

from conveyor import InvalidArgument
from conveyor.backends.redis import RedisDriver
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    InsertResult,
    InsertStatus,
    JobState,
    NewJob,
)
from conveyor.engine import Engine
from tests.conftest import redis_test_url


def new(job_id: str, queue: str = "q", **fields: object) -> NewJob:
    return NewJob(id=job_id, queue=queue, name="n", payload=b"{}", **fields)  # type: ignore[arg-type]


async def warm(driver: RedisDriver, queue: str = "q") -> None:
    """Write one job of ``queue`` the usual way: connected, scripts loaded, the queue known."""
    await driver.job_insert_many([new(f"warm-{queue}", queue)])


def keys_found(url: str, keys: list[str]) -> int:
    """How many of ``keys`` exist, once all do or after 2 s (the server reads a command
    when it gets to it), seen from a connection of its own."""
    with redis.Redis.from_url(url.split("?")[0]) as other:
        found = 0
        for _ in range(200):
            found = int(other.exists(*keys))
            if found == len(keys):
                break
            time.sleep(0.01)
        return found


async def test_a_known_queue_is_written_before_the_call_returns(redis_driver: RedisDriver) -> None:
    await warm(redis_driver)
    sent = redis_driver.start_insert([new("a"), new("warm-q"), new("b")])
    assert sent is not None
    # Sent already: another connection sees the jobs, with this task yet to await anything
    # (this thread blocks below, so nothing of this loop runs meanwhile).
    job_keys = [redis_driver._q("q").jobs + job_id for job_id in ("a", "b")]
    assert keys_found(redis_driver.source_url, job_keys) == 2
    assert await sent == [
        InsertResult("a", InsertStatus.INSERTED, JobState.QUEUED),
        InsertResult("warm-q", InsertStatus.DUPLICATE, JobState.QUEUED),
        InsertResult("b", InsertStatus.INSERTED, JobState.QUEUED),
    ]
    # The usual path reports the same jobs the same way.
    assert [r.status for r in await redis_driver.job_insert_many([new("a")])] == [
        InsertStatus.DUPLICATE
    ]


async def test_what_it_cannot_send_at_once_it_does_not_send(redis_base_url: str) -> None:
    driver = RedisDriver(redis_test_url(redis_base_url))
    await driver.open()
    try:
        assert driver.can_start_inserts
        # A queue this driver has not written yet must be registered first: a round trip.
        assert driver.start_insert([new("a")]) is None
        await warm(driver)
        dedup = Dedup(DedupMode.UNTIL_STARTED, "k")
        assert driver.start_insert([new("b", dedup=dedup)]) is None  # the dedup script's job
        assert driver.start_insert([new("c"), new("d", queue="other")]) is None  # two queues
        assert driver.start_insert([new("e\x00")]) is None  # refused by the usual path
        assert driver.start_insert([]) is None
        assert driver.start_insert([new("g")], now=float("nan")) is None  # refused too
        many = [new(f"h{i}") for i in range(501)]  # more than one script call takes
        assert driver.start_insert(many) is None
        with pytest.raises(InvalidArgument):
            await driver.job_insert_many([new("e\x00")])
        # None of them was written.
        assert await driver.job_get_many(["a", "b", "c", "d", "g", "h0"]) == [None] * 6
    finally:
        await driver.close()
    assert driver.start_insert([new("f")]) is None  # no connection to write on


async def test_a_server_that_lost_its_scripts_gets_the_insert_the_usual_way(
    redis_driver: RedisDriver,
) -> None:
    await warm(redis_driver)
    with redis.Redis.from_url(redis_driver.source_url.split("?")[0]) as other:
        other.script_flush()
    sent = redis_driver.start_insert([new("a"), new("b")])
    assert sent is not None
    assert [r.status for r in await sent] == [InsertStatus.INSERTED] * 2
    got = await redis_driver.job_get_many(["a", "b"])
    assert [j.id if j else None for j in got] == ["a", "b"]


class Recording(RedisDriver):
    """A driver whose ``job_insert_many`` is its own: it must see every insert."""

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        return await super().job_insert_many(jobs, now=now)


class Wrapper:
    """A wrapper that hands on what it does not define, as fault-injecting test drivers do."""

    def __init__(self, inner: RedisDriver) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        return await self.inner.job_insert_many(jobs, now=now)


def test_only_a_driver_whose_class_defines_both_inserts_sends_from_the_task(
    redis_base_url: str,
) -> None:
    url = redis_test_url(redis_base_url)
    assert Engine(RedisDriver(url)).starts_inserts
    assert not Engine(RedisDriver(url.replace("redis://", "redis+cluster://"))).starts_inserts
    assert not Engine(Recording(url)).starts_inserts
    assert not Engine(Wrapper(RedisDriver(url))).starts_inserts  # type: ignore[arg-type]
