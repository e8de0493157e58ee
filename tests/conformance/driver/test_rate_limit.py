"""Rate limits inside job_fetch, rate_limit_block and rate_limit_wait: at most ``count`` starts
of a queue in any window of ``per`` seconds, across every fetcher, with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import FetchParams, JobRecord, JobState, RateLimit

from ._support import LEASE, T0, get, insert, new_job

LIMITED = "limited"


async def fetch_limited(
    driver: Driver,
    *,
    now: float,
    limit: int = 10,
    rate: tuple[int, float] = (3, 1.0),
    queues: Sequence[str] = (LIMITED,),
    worker_id: str = "worker-1",
) -> list[JobRecord]:
    count, per = rate
    params = FetchParams(
        tuple(queues), limit, worker_id, LEASE, rate_limits=(RateLimit(LIMITED, count, per),)
    )
    return await driver.job_fetch(params, now=now)


async def fill(driver: Driver, n: int, *, queue: str = LIMITED, prefix: str = "j") -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    await driver.job_insert_many([new_job(i, queue=queue) for i in ids], now=T0 - 10)
    return ids


def most_in_any_window(starts: Sequence[float], per: float) -> int:
    """The most starts in any half-open window [t, t + per)."""
    ordered = sorted(starts)
    best = 0
    for i, first in enumerate(ordered):
        best = max(best, sum(1 for s in ordered[i:] if s < first + per))
    return best


async def test_a_fetch_leases_no_more_than_the_limit_allows(driver: Driver) -> None:
    await fill(driver, 10)
    first = await fetch_limited(driver, now=T0)
    assert [j.id for j in first] == ["j000", "j001", "j002"]
    assert await fetch_limited(driver, now=T0 + 0.5) == []
    assert await fetch_limited(driver, now=T0 + 0.999) == []
    # Exactly one window later the oldest starts have left it.
    assert [j.id for j in await fetch_limited(driver, now=T0 + 1.0)] == ["j003", "j004", "j005"]
    # The jobs the limit held back are still queued, untouched.
    held = await get(driver, "j006")
    assert held.state is JobState.QUEUED and held.attempt == 0


async def test_the_window_slides_with_each_start(driver: Driver) -> None:
    await fill(driver, 10)
    assert len(await fetch_limited(driver, now=T0, limit=1, rate=(3, 1.0))) == 1
    assert len(await fetch_limited(driver, now=T0 + 0.5, rate=(3, 1.0))) == 2
    # At T0 + 1 only the start at T0 has left the window: one more, not three.
    assert len(await fetch_limited(driver, now=T0 + 1.0, rate=(3, 1.0))) == 1
    assert await fetch_limited(driver, now=T0 + 1.4, rate=(3, 1.0)) == []
    assert len(await fetch_limited(driver, now=T0 + 1.5, rate=(3, 1.0))) == 2


async def test_no_window_ever_holds_more_than_the_limit(driver: Driver) -> None:
    ids = await fill(driver, 60)
    now = T0
    for step in range(40):
        await fetch_limited(driver, now=now, limit=1 + step % 4, rate=(5, 1.0))
        now += 0.13 + (step % 3) * 0.07
    jobs = [await get(driver, i) for i in ids]
    starts = [j.started_at for j in jobs if j.started_at is not None]
    assert len(starts) > 20  # it did not just refuse everything
    assert most_in_any_window(starts, 1.0) <= 5


async def test_concurrent_fetchers_share_one_limit(driver: Driver) -> None:
    await fill(driver, 40)
    others = [driver.connect_another() for _ in range(4)]
    for other in others:
        await other.open()
    try:
        results = await asyncio.gather(
            *(
                fetch_limited(d, now=T0, limit=5, rate=(7, 1.0), worker_id=f"w{n}")
                for n, d in enumerate(others)
            )
        )
    finally:
        for other in others:
            await other.close()
    leased = [j.id for batch in results for j in batch]
    assert len(leased) == 7 and len(set(leased)) == 7


async def test_a_limit_caps_only_its_own_queue_and_order_holds_across_queues(
    driver: Driver,
) -> None:
    await driver.job_insert_many(
        [new_job(f"l{i}", queue=LIMITED, priority=0) for i in range(4)]
        + [new_job(f"o{i}", queue="open", priority=1) for i in range(4)],
        now=T0 - 10,
    )
    fetched = await fetch_limited(driver, now=T0, limit=5, rate=(2, 1.0), queues=(LIMITED, "open"))
    # The limited queue's jobs come first (priority 0) but only two may start; the rest of the
    # room goes to the other queue.
    assert [j.id for j in fetched] == ["l0", "l1", "o0", "o1", "o2"]


async def test_fetches_without_the_limit_are_not_limited(driver: Driver) -> None:
    await fill(driver, 6)
    assert len(await fetch_limited(driver, now=T0, rate=(2, 1.0))) == 2
    plain = await driver.job_fetch(FetchParams((LIMITED,), 10, "w", LEASE), now=T0)
    assert len(plain) == 4


async def test_a_limit_of_a_queue_not_fetched_changes_nothing(driver: Driver) -> None:
    await fill(driver, 3, queue="other", prefix="o")
    params = FetchParams(("other",), 10, "w", LEASE, rate_limits=(RateLimit(LIMITED, 1, 1.0),))
    assert len(await driver.job_fetch(params, now=T0)) == 3
    assert await driver.rate_limit_wait([RateLimit(LIMITED, 1, 1.0)], now=T0) == {}


async def test_wait_reports_when_the_next_start_is_allowed(driver: Driver) -> None:
    await fill(driver, 10)
    limit = RateLimit(LIMITED, 3, 1.0)
    assert await driver.rate_limit_wait([limit], now=T0) == {}  # nothing started yet
    await fetch_limited(driver, now=T0, limit=2)
    assert await driver.rate_limit_wait([limit], now=T0 + 0.1) == {}  # one place left
    await fetch_limited(driver, now=T0 + 0.25)
    waits = await driver.rate_limit_wait([limit], now=T0 + 0.5)
    assert waits == {LIMITED: pytest.approx(0.5, abs=1e-6)}
    assert await driver.rate_limit_wait([limit], now=T0 + 1.0) == {}


async def test_a_block_holds_every_start_until_it_ends(driver: Driver) -> None:
    await fill(driver, 5)
    await driver.rate_limit_block(LIMITED, 30.0, now=T0)
    assert await fetch_limited(driver, now=T0 + 29.9, rate=(100, 1.0)) == []
    waits = await driver.rate_limit_wait([RateLimit(LIMITED, 100, 1.0)], now=T0 + 10)
    assert waits == {LIMITED: pytest.approx(20.0, abs=1e-6)}
    # A shorter block recorded later does not shorten it.
    await driver.rate_limit_block(LIMITED, 1.0, now=T0 + 10)
    assert await fetch_limited(driver, now=T0 + 20, rate=(100, 1.0)) == []
    assert len(await fetch_limited(driver, now=T0 + 30, rate=(100, 1.0))) == 5


async def test_a_block_and_a_full_window_wait_for_the_later_of_the_two(driver: Driver) -> None:
    await fill(driver, 5)
    await fetch_limited(driver, now=T0, rate=(2, 10.0))
    await driver.rate_limit_block(LIMITED, 3.0, now=T0 + 1)
    waits = await driver.rate_limit_wait([RateLimit(LIMITED, 2, 10.0)], now=T0 + 2)
    assert waits == {LIMITED: pytest.approx(8.0, abs=1e-6)}


async def test_a_paused_limited_queue_records_no_starts(driver: Driver) -> None:
    await fill(driver, 4)
    await driver.queue_pause(LIMITED)
    assert await fetch_limited(driver, now=T0, rate=(2, 1.0)) == []
    await driver.queue_resume(LIMITED)
    assert len(await fetch_limited(driver, now=T0, rate=(2, 1.0))) == 2


async def test_a_smaller_fetch_limit_still_wins(driver: Driver) -> None:
    await fill(driver, 5)
    assert len(await fetch_limited(driver, now=T0, limit=1, rate=(4, 1.0))) == 1
    assert len(await fetch_limited(driver, now=T0, limit=10, rate=(4, 1.0))) == 3


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ((RateLimit(LIMITED, 0, 1.0),), "count must be a whole number from 1"),
        ((RateLimit(LIMITED, 10_001, 1.0),), "count must be a whole number from 1"),
        ((RateLimit(LIMITED, 2, 0.0),), "per must be > 0"),
        ((RateLimit(LIMITED, 2, float("nan")),), "per must be > 0"),
        ((RateLimit(LIMITED, 2, 86_401.0),), "at most 86400"),
        ((RateLimit(LIMITED, 2, 1.0), RateLimit(LIMITED, 3, 1.0)), "more than one rate limit"),
    ],
)
async def test_invalid_limits_are_refused_before_anything_is_leased(
    driver: Driver, limits: tuple[RateLimit, ...], message: str
) -> None:
    await fill(driver, 2)
    params = FetchParams((LIMITED,), 10, "w", LEASE, rate_limits=limits)
    with pytest.raises(InvalidArgument, match=message):
        await driver.job_fetch(params, now=T0)
    with pytest.raises(InvalidArgument, match=message):
        await driver.rate_limit_wait(limits, now=T0)
    assert (await get(driver, "j000")).state is JobState.QUEUED


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), 86_401.0])
async def test_invalid_blocks_are_refused(driver: Driver, seconds: float) -> None:
    with pytest.raises(InvalidArgument):
        await driver.rate_limit_block(LIMITED, seconds, now=T0)
    await insert(driver, "j", queue=LIMITED, now=T0)
    assert len(await fetch_limited(driver, now=T0)) == 1


async def test_the_limit_holds_when_a_fetch_also_offers_long_waiting_unknown_names(
    driver: Driver,
) -> None:
    # A backend that fetches by name looks up the known names and, beside them, jobs of other
    # names that waited past ``unknown_after``: together they may offer more than the limit.
    waiting = [new_job(f"gone{n}", queue="lim", name="gone", priority=5) for n in range(3)]
    waiting += [new_job(f"x{n}", queue="lim", name="x", priority=5) for n in range(3)]
    await driver.job_insert_many(waiting, now=T0)
    recent = [new_job(f"r{n}", queue="lim", name="other") for n in range(70)]
    await driver.job_insert_many(recent, now=T0 + 59)
    params = FetchParams(
        ("lim",), 10, "w1", LEASE, ("x",), 5.0, rate_limits=(RateLimit("lim", 2, 100.0),)
    )
    assert len(await driver.job_fetch(params, now=T0 + 60)) == 2


async def test_a_fetch_the_limit_allows_nothing_still_promotes_due_jobs(driver: Driver) -> None:
    await fill(driver, 1)
    await insert(driver, "later", queue=LIMITED, delay=5, now=T0)
    await driver.rate_limit_block(LIMITED, 60, now=T0)
    assert await fetch_limited(driver, now=T0 + 10) == []
    # Promotion is the fetch's first step, whatever it then leases.
    assert (await get(driver, "later")).state is JobState.QUEUED
