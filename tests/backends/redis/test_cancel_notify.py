"""Capability.CANCEL_NOTIFY: a cancel reaches the worker running the job at once, on a
connection of its own, and a notice that cannot be delivered never fails the cancel."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._commands import CANCELS_TTL
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import ChangeStatus, FetchParams, JobState, NewJob
from tests.conftest import redis_test_url


@pytest.fixture(params=["redis", "redis-cluster"])
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[RedisDriver]:
    base = request.getfixturevalue(
        "redis_base_url" if request.param == "redis" else "redis_cluster_url"
    )
    driver = RedisDriver(redis_test_url(base))
    await driver.open()
    yield driver
    await driver.close()


def job(job_id: str) -> NewJob:
    return NewJob(job_id, "default", "t", b"{}")


async def test_the_worker_running_a_cancelled_job_hears_of_it_at_once(driver: RedisDriver) -> None:
    assert Capability.CANCEL_NOTIFY in driver.capabilities
    await driver.job_insert_many([job("a"), job("b"), job("c")])
    await driver.job_fetch(FetchParams(("default",), 2, "w1", 30.0))  # a and b
    listening = asyncio.create_task(driver.cancel_listen("w1", 20.0))
    started = time.monotonic()
    results = await driver.job_cancel_many(["a", "c"])
    assert [r.status for r in results] == [ChangeStatus.CANCEL_REQUESTED, ChangeStatus.OK]
    assert await asyncio.wait_for(listening, 10) == ["a"]  # c was waiting: nobody to tell
    assert time.monotonic() - started < 5
    key = driver._store.ns.cancels("w1")
    assert await driver._c.execute_command("EXISTS", key) == 0  # taken
    # Several cancels at once come back together; another worker hears nothing.
    await driver.job_cancel_many(["b", "a"])
    assert sorted(await driver.cancel_listen("w1", 5.0)) == ["a", "b"]
    assert await driver.cancel_listen("w2", 0.2) == []


async def test_an_unread_notice_expires_with_its_dead_worker(driver: RedisDriver) -> None:
    await driver.job_insert_many([job("a")])
    await driver.job_fetch(FetchParams(("default",), 1, "gone", 30.0))
    await driver.job_cancel_many(["a"])
    ttl = await driver._c.execute_command("TTL", driver._store.ns.cancels("gone"))
    assert 0 < ttl <= CANCELS_TTL


async def test_listening_for_cancels_does_not_disturb_a_waiting_fetch(driver: RedisDriver) -> None:
    params = FetchParams(("default",), 1, "w1", 30.0)
    fetching = asyncio.create_task(driver.job_fetch(params, wait=20.0))
    listening = asyncio.create_task(driver.cancel_listen("w1", 20.0))
    await asyncio.sleep(0.05)  # both blocked now (or about to be: either order works)
    await driver.job_insert_many([job("a")])
    [leased] = await asyncio.wait_for(fetching, 10)
    assert not listening.done()
    await driver.job_cancel_many([leased.id])
    assert await asyncio.wait_for(listening, 10) == ["a"]


async def test_cancel_listen_waits_its_timeout_when_nothing_happens(driver: RedisDriver) -> None:
    started = time.monotonic()
    assert await driver.cancel_listen("w1", 0.3) == []
    assert 0.25 <= time.monotonic() - started < 5


async def test_a_notice_that_cannot_be_delivered_does_not_fail_the_cancel(
    restricted_url: Callable[[Sequence[str]], str], caplog: pytest.LogCaptureFixture
) -> None:
    # A user allowed the queue's keys and the registry of queues, but not the cancel lists:
    # every push fails, the cancel itself must not.
    url = restricted_url(["{acl}:queues", "{acl:default}:*"])
    driver = RedisDriver(url)
    await driver.open()
    try:
        await driver.job_insert_many([job("a")])
        await driver.job_fetch(FetchParams(("default",), 1, "w1", 30.0))
        caplog.set_level(logging.WARNING, logger="conveyor.redis")
        [result] = await driver.job_cancel_many(["a"])
        assert result.status is ChangeStatus.CANCEL_REQUESTED
        [a] = await driver.job_get_many(["a"])
        assert a is not None and a.state is JobState.ACTIVE and a.cancel_requested
        assert any("lease renewals will" in r.getMessage() for r in caplog.records)
    finally:
        await driver.close()
