"""stats_add / stats_read: per-minute counters of finished attempts, kept for three hours."""

from __future__ import annotations

import asyncio

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.common import STATS_KEEP_MINUTES
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import QueueStats

from ._support import T0

M0 = int(T0 // 60)


async def test_counts_add_up_per_queue_and_minute(driver: Driver) -> None:
    await driver.stats_add(
        [QueueStats("a", M0, completed=3), QueueStats("b", M0, failed=1)], now=T0
    )
    await driver.stats_add(
        [QueueStats("a", M0, completed=2, retried=1), QueueStats("a", M0 + 1, failed=4)],
        now=T0 + 60,
    )
    assert await driver.stats_read(None, since_minute=M0) == [
        QueueStats("a", M0, completed=5, retried=1),
        QueueStats("a", M0 + 1, failed=4),
        QueueStats("b", M0, failed=1),
    ]
    assert await driver.stats_read(["b"], since_minute=M0) == [QueueStats("b", M0, failed=1)]
    assert await driver.stats_read(["a"], since_minute=M0 + 1) == [
        QueueStats("a", M0 + 1, failed=4)
    ]
    assert await driver.stats_read(["nobody"], since_minute=0) == []


async def test_concurrent_adds_lose_nothing(driver: Driver) -> None:
    others = [driver.connect_another() for _ in range(3)]
    for other in others:
        await other.open()
    try:
        await asyncio.gather(
            *(
                d.stats_add([QueueStats("a", M0, completed=1, retried=2)], now=T0)
                for d in [driver, *others]
                for _ in range(10)
            )
        )
    finally:
        for other in others:
            await other.close()
    assert await driver.stats_read(["a"], since_minute=M0) == [
        QueueStats("a", M0, completed=40, retried=80)
    ]


async def test_old_buckets_are_dropped(driver: Driver) -> None:
    await driver.stats_add([QueueStats("a", M0, completed=1)], now=T0)
    later = T0 + (STATS_KEEP_MINUTES + 5) * 60
    await driver.stats_add([QueueStats("a", M0 + STATS_KEEP_MINUTES + 5, completed=1)], now=later)
    # Dropped by the add at ``later`` (whatever the real time: a TTL on the wall clock alone
    # would not do), not merely hidden from a reader who asks for the last hours.
    assert await driver.stats_read(["a"], since_minute=0) == [
        QueueStats("a", M0 + STATS_KEEP_MINUTES + 5, completed=1)
    ]


@pytest.mark.parametrize(
    "bad",
    [
        QueueStats("a", M0, completed=-1),
        QueueStats("a", -5),
        QueueStats("a\x00", M0, completed=1),
        QueueStats("a", M0, completed=2**60),
    ],
)
async def test_bad_samples_are_refused_before_any_write(driver: Driver, bad: QueueStats) -> None:
    with pytest.raises(InvalidArgument):
        await driver.stats_add([QueueStats("good", M0, completed=1), bad], now=T0)
    assert await driver.stats_read(None, since_minute=0) == []
