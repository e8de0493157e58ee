"""leader_acquire and leader_release: one holder per name, until its ttl runs out."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

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


CONTENDERS = 5
ROUNDS = 10  # a lost race is likely, not certain, in one round: run several, each a new name


async def _holds_alone(driver: Driver, name: str, won: list[bool]) -> None:
    """Exactly one contender won, and the lease is really its: it renews, the others cannot."""
    assert won.count(True) == 1, f"{name}: {won}"
    winner = won.index(True)
    assert await driver.leader_acquire(name, f"holder-{winner}", ttl=10, now=T0 + 1)
    loser = (winner + 1) % CONTENDERS
    assert not await driver.leader_acquire(name, f"holder-{loser}", ttl=10, now=T0 + 1)


async def test_contenders_on_separate_connections_elect_exactly_one(driver: Driver) -> None:
    others = [driver.connect_another() for _ in range(CONTENDERS)]
    opened: list[Driver] = []
    try:
        for other in others:
            await other.open()
            opened.append(other)
        for round_ in range(ROUNDS):
            name = f"m-{round_}"
            won = await asyncio.gather(
                *(
                    d.leader_acquire(name, f"holder-{n}", ttl=10, now=T0)
                    for n, d in enumerate(others)
                )
            )
            await _holds_alone(driver, name, list(won))
    finally:
        for other in opened:
            await other.close()


async def test_contenders_in_separate_threads_elect_exactly_one(driver: Driver) -> None:
    """Each contender on its own OS thread, event loop and connection, released together."""
    start = threading.Barrier(CONTENDERS)

    def contend(n: int, name: str) -> bool:
        async def go() -> bool:
            mine = driver.connect_another()
            await mine.open()
            try:
                start.wait(timeout=10)
                return await mine.leader_acquire(name, f"holder-{n}", ttl=10, now=T0)
            finally:
                await mine.close()

        return asyncio.run(go())

    with ThreadPoolExecutor(max_workers=CONTENDERS) as pool:
        for round_ in range(ROUNDS):
            name = f"t-{round_}"
            futures = [pool.submit(contend, n, name) for n in range(CONTENDERS)]
            won = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            await _holds_alone(driver, name, list(won))
