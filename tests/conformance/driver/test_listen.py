"""listen and notify: wake idle workers in the same process, time out otherwise."""

from __future__ import annotations

import asyncio
import time

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import TransitionKind

from ._support import T0, fetch_one, finish, insert

LONG = 10.0  # a listen that is expected to be woken must return long before this


async def _returns_early(listening: asyncio.Task[None]) -> float:
    started = time.monotonic()
    await asyncio.wait_for(listening, timeout=LONG)
    return time.monotonic() - started


async def _listening(driver: Driver, queues: tuple[str, ...] = ("default",)) -> asyncio.Task[None]:
    task = asyncio.create_task(driver.listen(queues, LONG))
    await asyncio.sleep(0)  # let the listener start before anything happens
    return task


async def test_listen_wakes_when_a_job_is_inserted_on_the_same_driver(driver: Driver) -> None:
    task = await _listening(driver)
    await insert(driver, "a", now=T0)
    assert await _returns_early(task) < LONG / 2


async def test_listen_wakes_when_another_connection_in_the_process_inserts(
    driver: Driver,
) -> None:
    producer = driver.connect_another()
    await producer.open()
    try:
        task = await _listening(driver, ("mail", "default"))
        await insert(producer, "a", queue="mail", now=T0)
        assert await _returns_early(task) < LONG / 2
    finally:
        await producer.close()


async def test_listen_wakes_on_resume_requeue_and_explicit_notify(driver: Driver) -> None:
    await driver.queue_pause("default")
    task = await _listening(driver)
    await driver.queue_resume("default")
    assert await _returns_early(task) < LONG / 2

    await insert(driver, "a", now=T0)
    job = await fetch_one(driver)
    task = await _listening(driver)
    await finish(driver, job, TransitionKind.REQUEUE)
    assert await _returns_early(task) < LONG / 2

    task = await _listening(driver)
    driver.notify("default")
    assert await _returns_early(task) < LONG / 2


async def test_listen_times_out_when_nothing_happens(driver: Driver) -> None:
    started = time.monotonic()
    await driver.listen(["default"], 0.3)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 5


async def test_zero_timeout_returns_at_once(driver: Driver) -> None:
    started = time.monotonic()
    await driver.listen(["default"], 0)
    assert time.monotonic() - started < 1


async def test_notify_just_before_listen_is_not_lost(driver: Driver) -> None:
    # A worker's fetch found nothing; a producer notifies before the worker starts to listen.
    driver.notify("default")
    started = time.monotonic()
    await driver.listen(["default"], LONG)
    assert time.monotonic() - started < LONG / 2
    # The notification is consumed: the next listen waits for a new one.
    started = time.monotonic()
    await driver.listen(["default"], 0.3)
    assert time.monotonic() - started >= 0.25


async def test_notify_from_another_connection_before_listen_is_not_lost(driver: Driver) -> None:
    other = driver.connect_another()
    await other.open()
    try:
        other.notify("mail")
        started = time.monotonic()
        await driver.listen(["default", "mail"], LONG)
        assert time.monotonic() - started < LONG / 2
    finally:
        await other.close()


async def test_notify_before_listen_on_another_queue_does_not_wake(driver: Driver) -> None:
    driver.notify("other")
    started = time.monotonic()
    await driver.listen(["default"], 0.3)
    assert time.monotonic() - started >= 0.25
