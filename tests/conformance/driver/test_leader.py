"""leader_acquire and leader_release: one holder per name, until its ttl runs out."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver

from ._support import T0


async def test_only_one_holder_at_a_time(driver: Driver) -> None:
    assert await driver.leader_acquire("maintenance", "a", ttl=10, now=T0)
    assert not await driver.leader_acquire("maintenance", "b", ttl=10, now=T0 + 9.9)
    assert await driver.leader_acquire("other-role", "b", ttl=10, now=T0)


async def test_the_holder_renews_and_keeps_it(driver: Driver) -> None:
    assert await driver.leader_acquire("m", "a", ttl=10, now=T0)
    assert await driver.leader_acquire("m", "a", ttl=10, now=T0 + 8)
    assert not await driver.leader_acquire("m", "b", ttl=10, now=T0 + 15)
    assert await driver.leader_acquire("m", "b", ttl=10, now=T0 + 18)


async def test_an_expired_leadership_can_be_taken_over(driver: Driver) -> None:
    assert await driver.leader_acquire("m", "a", ttl=10, now=T0)
    assert await driver.leader_acquire("m", "b", ttl=10, now=T0 + 10)
    assert not await driver.leader_acquire("m", "a", ttl=10, now=T0 + 11)


async def test_release_frees_it_only_for_the_holder(driver: Driver) -> None:
    assert await driver.leader_acquire("m", "a", ttl=10, now=T0)
    await driver.leader_release("m", "b")
    assert not await driver.leader_acquire("m", "b", ttl=10, now=T0 + 1)
    await driver.leader_release("m", "a")
    assert await driver.leader_acquire("m", "b", ttl=10, now=T0 + 1)
    await driver.leader_release("never-held", "a")


async def test_contenders_on_separate_connections_elect_exactly_one(driver: Driver) -> None:
    others = [driver.connect_another() for _ in range(4)]
    for other in others:
        await other.open()
    try:
        won = [
            await d.leader_acquire("m", f"holder-{n}", ttl=10, now=T0) for n, d in enumerate(others)
        ]
    finally:
        for other in others:
            await other.close()
    assert won == [True, False, False, False]
