"""Grouped definitions on a real worker over every backend: serial per key (checked from a
ledger of starts and ends), per-key rate limits woken by the fake clock, a grouped handler's
``RateLimited`` pausing only its key, and the group shown by ``Queue.get``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import (
    FakeClock,
    InvalidArgument,
    InvalidJobDefinition,
    JobContext,
    JobState,
    Queue,
    Rate,
    RateLimited,
    job,
)
from tests.conformance.worker.helpers import Harness, wait_for, wait_state


class Account(BaseModel):
    account: str
    n: int


serial = job(
    "test.group.serial",
    Account,
    result=int,
    queue="accounts",
    group_key=lambda p: p.account,
    group_concurrency=1,
)
paced = job(
    "test.group.paced",
    Account,
    result=int,
    queue="paced",
    attempts=1,
    group_key=lambda p: p.account,
    group_rate=Rate(2, per=10),
)


async def test_jobs_of_one_key_run_one_at_a_time_and_keys_run_side_by_side(
    harness: Harness, queue: Queue
) -> None:
    ledger: list[tuple[str, str, int]] = []  # ("start" | "end", account, n)
    running: dict[str, int] = {}
    overlap = asyncio.Event()
    worker = harness.worker(concurrency=8)

    @worker.handles(serial)
    async def handle(payload: Account, ctx: JobContext) -> int:
        ledger.append(("start", payload.account, payload.n))
        running[payload.account] = running.get(payload.account, 0) + 1
        if sum(1 for v in running.values() if v) >= 2:
            overlap.set()
        # Hold the slot until another key runs beside it (or a bounded wait passes), so the
        # ledger shows both serial keys and parallel keys.
        try:
            await asyncio.wait_for(overlap.wait(), timeout=0.5)
        except TimeoutError:
            pass
        running[payload.account] -= 1
        ledger.append(("end", payload.account, payload.n))
        return payload.n

    accounts = ["acct-a", "acct-b", "acct-c"]
    handles = [
        await queue.enqueue(serial, Account(account=accounts[i % 3], n=i)) for i in range(18)
    ]
    harness.start(worker)
    for h in handles:
        await h.result(timeout=30)
    # From the ledger: no key ever had two jobs between a start and its end.
    depth: dict[str, int] = {}
    for event, account, _ in ledger:
        depth[account] = depth.get(account, 0) + (1 if event == "start" else -1)
        assert depth[account] in (0, 1), f"two jobs of {account} ran at once: {ledger}"
    assert overlap.is_set(), "jobs of different keys should run side by side"
    # Each key's jobs ran in enqueue order.
    for account in accounts:
        mine = [n for event, a, n in ledger if event == "start" and a == account]
        assert mine == sorted(mine)
    info = await queue.get(handles[0].id)
    assert info is not None and info.group == "test.group.serial:acct-a"


async def test_a_keys_rate_holds_that_key_and_the_clock_releases_it(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    started: list[tuple[str, float]] = []
    worker = harness.worker(concurrency=10)

    @worker.handles(paced)
    async def handle(payload: Account, ctx: JobContext) -> int:
        started.append((payload.account, clock.now()))
        return payload.n

    t0 = clock.now()
    handles = [await queue.enqueue(paced, Account(account="slow", n=i)) for i in range(5)]
    other = await queue.enqueue(paced, Account(account="other", n=99))
    harness.start(worker)
    assert await other.result(timeout=10) == 99
    await wait_for(lambda: sum(1 for a, _ in started if a == "slow") == 2, what="two starts")
    clock.advance(9.9)
    await wait_for(lambda: clock.now() >= t0 + 9.9)
    clock.advance(0.1)
    await wait_for(lambda: sum(1 for a, _ in started if a == "slow") == 4, what="two more")
    clock.advance(10)
    for h in handles:
        await h.result(timeout=10)
    slow = [at - t0 for a, at in started if a == "slow"]
    assert slow == pytest.approx([0, 0, 10, 10, 20])


async def test_rate_limited_pauses_only_the_handlers_key(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    calls: list[tuple[str, float]] = []
    worker = harness.worker(concurrency=5)

    @worker.handles(paced)
    async def handle(payload: Account, ctx: JobContext) -> int:
        calls.append((payload.account, clock.now()))
        if payload.account == "busy" and len([c for c in calls if c[0] == "busy"]) == 1:
            raise RateLimited(timedelta(seconds=30), "the tenant's API said 429")
        return payload.n

    harness.start(worker)
    t0 = clock.now()
    first = await queue.enqueue(paced, Account(account="busy", n=1))
    await wait_for(lambda: len(calls) == 1)
    info = await wait_state(queue, first.id, JobState.QUEUED)
    assert info.attempt == 0  # attempts=1: a spent attempt would have failed it
    # Another key is not held; the paused key's next job is.
    other = await queue.enqueue(paced, Account(account="calm", n=2))
    assert await other.result(timeout=10) == 2
    second = await queue.enqueue(paced, Account(account="busy", n=3))
    clock.advance(29)
    await wait_for(lambda: clock.now() >= t0 + 29)
    assert (await wait_state(queue, second.id, JobState.QUEUED)).attempt == 0
    clock.advance(1)
    assert await first.result(timeout=10) == 1
    assert await second.result(timeout=10) == 3
    assert all(at >= t0 + 30 for account, at in calls[1:] if account == "busy")


async def test_a_key_function_that_fails_fails_only_its_enqueue(queue: Queue) -> None:
    def broken(p: Account) -> str:
        if p.n < 0:
            raise KeyError("no account")
        return p.account

    defn = job("test.group.broken", Account, group_key=broken)
    with pytest.raises(InvalidArgument, match=r"test\.group\.broken.*group_key"):
        await queue.enqueue(defn, Account(account="a", n=-1))
    assert (await queue.enqueue(defn, Account(account="a", n=1))).id


def test_group_limits_need_a_key() -> None:
    with pytest.raises(InvalidJobDefinition, match="group_key"):
        job("test.group.nokey", Account, group_concurrency=1)
    with pytest.raises(InvalidJobDefinition, match="group_concurrency"):
        job("test.group.zero", Account, group_key=lambda p: p.account, group_concurrency=0)
    with pytest.raises(InvalidJobDefinition, match="group_rate"):
        job("test.group.fast", Account, group_key=lambda p: p.account, group_rate=Rate(5000, 1))


fast_paced = job(
    "test.group.fast_paced",
    Account,
    result=int,
    queue="fast-paced",
    group_key=lambda p: p.account,
    group_rate=Rate(1, per=0.5),
)


@pytest.mark.parametrize("held_by", ["rate", "RateLimited"])
async def test_a_worker_wakes_when_a_held_groups_turn_comes(
    harness: Harness, backend_url: str, held_by: str
) -> None:
    """On the backend's clock, with a poll interval far longer than the holds: nothing notifies
    a worker when a key's window slides or its pause ends, so it must wake by itself then."""
    real = Queue.from_url(backend_url)
    await real.connect()
    calls: list[int] = []
    worker = harness.worker(real, clock=None, poll_interval=30.0, concurrency=4)

    @worker.handles(fast_paced)
    async def handle(payload: Account, ctx: JobContext) -> int:
        calls.append(payload.n)
        if held_by == "RateLimited" and len(calls) == 1:
            raise RateLimited(0.5)
        return payload.n

    try:
        harness.start(worker)
        await harness.registered(worker)
        handles = [await real.enqueue(fast_paced, Account(account="x", n=i)) for i in range(3)]
        # One start per half second: about a second in all, where waiting for the poll would
        # take a minute.
        for h in handles:
            await h.result(timeout=10)
    finally:
        await harness.stop(worker)
        await real.close()


class _TurnPassesMeanwhile:
    """The queue's own driver, but the clock moves on between a fetch and the question about
    held groups that follows it, once armed: the race of a turn that comes in between."""

    def __init__(self, driver: object, clock: FakeClock, step: float) -> None:
        self._driver = driver
        self._clock = clock
        self._step = step
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    async def group_wait(self, queues: Any, *, names: Any = None, now: Any = None) -> Any:
        if self.armed:
            self.armed = False
            now = self._clock.advance(self._step)
        return await self._driver.group_wait(queues, names=names, now=now)  # type: ignore[attr-defined]


async def test_a_turn_that_comes_between_a_fetch_and_the_question_is_not_missed(
    harness: Harness, backend_url: str
) -> None:
    """A fetch finds the group held; its turn comes before the worker asks when the next one
    is (which names only turns still to come): the worker must look again at once, not wait
    for a notification that a turn never sends."""
    clock = harness.clock
    engine = harness.queue.driver
    racing = _TurnPassesMeanwhile(engine.driver, clock, step=1.0)
    queue = Queue(racing, clock=clock)  # type: ignore[arg-type]
    await queue.connect()
    worker = harness.worker(queue, poll_interval=30.0, concurrency=4)

    @worker.handles(fast_paced)
    async def handle(payload: Account, ctx: JobContext) -> int:
        if payload.n == 1:
            racing.armed = True  # the group's turn comes during the next question about it
        return payload.n

    try:
        harness.start(worker)
        await harness.registered(worker)
        first = await queue.enqueue(fast_paced, Account(account="x", n=1))
        second = await queue.enqueue(fast_paced, Account(account="x", n=2))
        assert await first.result(timeout=10) == 1
        assert await second.result(timeout=10) == 2  # not after the 30 s poll
    finally:
        await harness.stop(worker)
        await queue.close()
