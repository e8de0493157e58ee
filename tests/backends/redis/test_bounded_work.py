"""What an operator's command costs the server does not grow with the queue.

Listing a page and cancelling a queued job must cost about the page (or one job) plus a
logarithm, never a scan of the queue; bulk operations are cut into script calls of bounded
size. Measured with ``INFO commandstats`` (which counts the commands scripts run too) on a
private server, so that no other test's commands are counted: the same operations on a queue
of 300 jobs and of 30,000 must run the very same commands, none of which walks a whole list,
but for the bisection that finds a later page of queued jobs in the ready list (a read by
position and of the job's seq a step, a logarithm of the queue's length).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._stubs import BATCH
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobState,
    ListParams,
    NewJob,
    Retention,
    TransitionKind,
)
from tests.conftest import redis_test_url
from tests.servers.redis_server import RedisServer

T0 = 1_700_000_000.0

# Commands whose cost is a constant or a logarithm plus what they return (ZRANGE, HMGET, LPOP
# with a count are bounded by the LIMIT or count the scripts pass; so is LRANGE, which the
# listing script calls with a range of a page or a bisection step). LREM or LPOS would scan the
# queue.
BOUNDED = {
    "evalsha", "smembers", "hmget", "hget", "hset", "hdel", "hincrby", "exists", "zrange",
    "zrangebyscore", "zadd", "zrem", "zscore", "zcard", "del", "time", "rpush", "expire",
    "lrange", "llen", "hlen",
    "zcount",  # the active count below +inf (the set's sentinel): O(log n) in its skiplist
}  # fmt: skip
# Commands a bisection step of the ready list runs, once each.
BISECTION = ("lrange", "hmget")
# The test's own commands, not the driver's.
OWN = {"info", "config|resetstat", "config|set"}


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as private:
        yield private


def commands_run(raw: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = raw.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(entry["calls"])
        for name, entry in stats.items()
        if name.removeprefix("cmdstat_") not in OWN
    }


async def counted(raw: redis.Redis, step: Callable[[], Awaitable[object]]) -> dict[str, int]:
    raw.config_resetstat()
    await step()
    return commands_run(raw)


async def build(driver: RedisDriver, size: int) -> None:
    """A queue of ``size`` queued jobs, behind three failed ones (a rare state)."""
    await driver.job_insert_many([NewJob(f"rare-{n}", "q", "t", b"{}") for n in range(3)], now=T0)
    leased = await driver.job_fetch(FetchParams(("q",), 3, "w", 30.0), now=T0)
    fails = [FinishJob(j.id, j.lease_token or "", TransitionKind.FAIL, error="x") for j in leased]
    await driver.job_finish_many(fails, retention=Retention(), now=T0)
    jobs = [NewJob(f"j{n:06}", "q", "t", b"{}") for n in range(size)]
    await driver.job_insert_many(jobs, now=T0 + 1)


async def operator_costs(server: RedisServer, size: int) -> dict[str, dict[str, int]]:
    driver = RedisDriver(redis_test_url(server.url))
    await driver.open()
    try:
        await build(driver, size)
        with redis.Redis.from_url(server.url, decode_responses=True) as raw:
            page = await driver.job_list(ListParams(limit=20))
            assert [j.id for j in page] == [f"j{n:06}" for n in range(size - 1, size - 21, -1)]
            costs = {
                "list a page": await counted(raw, lambda: driver.job_list(ListParams(limit=20))),
                "list a rare state": await counted(
                    raw, lambda: driver.job_list(ListParams(states=(JobState.FAILED,), limit=2))
                ),
                "page on": await counted(
                    raw, lambda: driver.job_list(ListParams(limit=20, before_seq=page[-1].seq))
                ),
                "cancel the last job": await counted(
                    raw, lambda: driver.job_cancel_many([f"j{size - 1:06}"], now=T0 + 2)
                ),
                "count": await counted(raw, lambda: driver.job_count_by_state("q")),
            }
            counts = await driver.job_count_by_state("q")
            assert (counts[JobState.QUEUED], counts[JobState.CANCELLED]) == (size - 1, 1)
            assert counts[JobState.FAILED] == 3
            return costs
    finally:
        await driver.close()


async def test_listing_and_cancelling_cost_the_same_on_a_large_queue(server: RedisServer) -> None:
    await operator_costs(server, 30)  # loads the scripts (a first call sends their source)
    small = await operator_costs(server, 300)
    large = await operator_costs(server, 30_000)
    steps = math.ceil(math.log2(30_000 / 300)) + 1  # the bisection's extra steps, at most
    for operation, run in large.items():
        for command in set(run) | set(small[operation]):
            more = run.get(command, 0) - small[operation].get(command, 0)
            allowed = steps if operation == "page on" and command in BISECTION else 0
            assert 0 <= more <= allowed, f"{operation}: {command} ran {more} more times"
        assert set(run) <= BOUNDED, f"{operation} ran {set(run) - BOUNDED}"
        assert sum(run.values()) < 120, f"{operation}: {run}"
    # A page of 20 reads 20 jobs, in one script call for the queue's indexes (which reads the
    # seq of each of the 20 in the ready list).
    assert large["list a page"]["evalsha"] == 1 and large["list a page"]["hmget"] == 2 * 20


async def test_bulk_operations_are_cut_into_bounded_script_calls(server: RedisServer) -> None:
    driver = RedisDriver(redis_test_url(server.url))
    await driver.open()
    try:
        ids = [f"j{n:05}" for n in range(1_200)]
        with redis.Redis.from_url(server.url, decode_responses=True) as raw:
            insert = await counted(
                raw,
                lambda: driver.job_insert_many([NewJob(i, "q", "t", b"{}") for i in ids], now=T0),
            )
            cancel = await counted(raw, lambda: driver.job_cancel_many(ids, now=T0))
            retry = await counted(raw, lambda: driver.job_retry_many(ids, now=T0))
        calls = math.ceil(len(ids) / BATCH)
        assert (insert["evalsha"], cancel["evalsha"], retry["evalsha"]) == (calls,) * 3
        # The cancels left every entry in the ready list, counted stale: the retried jobs run
        # once each, in their new places, and nothing else is fetched.
        fetched = await driver.job_fetch(FetchParams(("q",), 2_000, "w", 30.0), now=T0 + 1)
        assert [j.id for j in fetched] == ids
    finally:
        await driver.close()


async def test_a_listing_larger_than_one_call_pages_through_each_state(server: RedisServer) -> None:
    driver = RedisDriver(redis_test_url(server.url))
    await driver.open()
    try:
        ids = [f"j{n:05}" for n in range(2_500)]
        jobs = [NewJob(i, "q", "a" if n % 3 else "b", b"{}") for n, i in enumerate(ids)]
        await driver.job_insert_many(jobs, now=T0)
        listed = await driver.job_list(ListParams(limit=2_400))
        assert [j.id for j in listed] == ids[::-1][:2_400]
        named = await driver.job_list(ListParams(limit=900, name="b"))
        assert [j.id for j in named] == [i for n, i in enumerate(ids) if n % 3 == 0][::-1][:900]
    finally:
        await driver.close()
