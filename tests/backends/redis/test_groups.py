"""Groups in the Redis store: the books the scripts keep (each group's set of queued jobs, its
active count, the ring of groups by turn, the grouped queued count) agree with the jobs after
every path in and out of ``queued`` and ``active``, on one server and on a Cluster; a fetch
reads a number of groups bounded by its limit; idle group records are pruned; a queue without
groups gets no group keys."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from conveyor.backends.redis import RedisDriver
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobGroup,
    JobState,
    NewJob,
    PurgeParams,
    RescueJob,
    Retention,
    TransitionKind,
)
from tests.backends.redis.consistency import problems
from tests.conftest import redis_test_url

T0 = 1_700_000_000.0
KEEP_ALL = Retention(completed_max_count=None, cancelled_max_age=None)


@pytest.fixture(params=["redis", "redis-cluster"])
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[RedisDriver]:
    base = request.getfixturevalue(
        "redis_base_url" if request.param == "redis" else "redis_cluster_url"
    )
    d = RedisDriver(redis_test_url(base))
    await d.open()
    try:
        yield d
    finally:
        await d.close()


def grouped(
    job_id: str, key: str, *, concurrency: int = 0, rate_count: int = 0, rate_per: float = 0.0
) -> NewJob:
    group = JobGroup(key, concurrency, rate_count, rate_per)
    return NewJob(job_id, "q", "n", b"{}", group=group)


def params(limit: int) -> FetchParams:
    return FetchParams(("q",), limit, "w", 30.0)


async def raw(d: RedisDriver, *command: str | float) -> object:
    return await d._store.client.execute_command(*command)


async def test_every_path_keeps_the_group_books(driver: RedisDriver) -> None:
    d = driver
    jobs = [grouped(f"a{i}", "A", concurrency=2) for i in range(4)]
    jobs += [grouped(f"b{i}", "B", rate_count=2, rate_per=10.0) for i in range(3)]
    jobs += [NewJob("p0", "q", "n", b"{}"), NewJob("s0", "q", "n", b"{}", delay=5.0)]
    jobs += [NewJob("s1", "q", "n", b"{}", delay=5.0, group=JobGroup("A", concurrency=2))]
    await d.job_insert_many(jobs, now=T0)
    assert problems(d.source_url) == []
    counts = await d.job_count_by_state("q")
    assert counts[JobState.QUEUED] == 8 and counts[JobState.SCHEDULED] == 2

    leased = await d.job_fetch(params(10), now=T0)
    # A: its concurrency (2); B: its rate (2); the plain job.
    assert sorted(j.id for j in leased) == ["a0", "a1", "b0", "b1", "p0"]
    assert {j.id: j.group for j in leased}["a0"] == "A"
    assert problems(d.source_url) == []
    assert await d.group_wait(["q"], now=T0) == pytest.approx(10.0)  # B's window

    by_id = {j.id: j for j in leased}
    finishes = [
        FinishJob("a0", by_id["a0"].lease_token or "", TransitionKind.COMPLETE),
        FinishJob("a1", by_id["a1"].lease_token or "", TransitionKind.REQUEUE),
        FinishJob("b0", by_id["b0"].lease_token or "", TransitionKind.RETRY, error="x", delay=1),
    ]
    await d.job_finish_many(finishes, retention=KEEP_ALL, now=T0 + 1)
    assert problems(d.source_url) == []

    # b1's lease expires: rescued back to queued, in its group.
    rescue = RescueJob("b1", by_id["b1"].lease_token or "", TransitionKind.REQUEUE, 1, "x", "q")
    await d.job_rescue_many([rescue], now=T0 + 40)
    assert problems(d.source_url) == []

    await d.job_promote_due(limit=10, now=T0 + 40)  # s0, s1 and b0 (retrying) come due
    assert problems(d.source_url) == []
    await d.job_cancel_many(["a2", "s1"], now=T0 + 40)
    assert problems(d.source_url) == []
    await d.job_retry_many(["a2"], now=T0 + 41)
    assert problems(d.source_url) == []

    leased = await d.job_fetch(params(3), now=T0 + 41)
    assert problems(d.source_url) == []
    # p0 still runs from the first fetch.
    assert await d.job_purge(PurgeParams("q", (JobState.ACTIVE,)), now=T0 + 41) == len(leased) + 1
    assert problems(d.source_url) == []
    assert await d.job_purge(PurgeParams("q", (JobState.QUEUED,)), now=T0 + 41) > 0
    assert problems(d.source_url) == []
    assert (await d.job_count_by_state("q"))[JobState.QUEUED] == 0
    assert await raw(d, "ZCOUNT", d._store.keys("q").ring, "-inf", "(+inf") == 0


async def test_a_fetch_reads_no_more_groups_than_its_limit(driver: RedisDriver) -> None:
    d = driver
    keys = d._store.keys("q")
    await d.job_insert_many([grouped(f"j{i}", f"g{i:03}") for i in range(300)], now=T0)
    await d.job_insert_many([grouped(f"k{i}", "g000") for i in range(50)], now=T0 + 1)
    first = await d.job_fetch(params(5), now=T0 + 2)
    # One job of each of the first five groups by turn (ties by key), not five of g000.
    assert [j.group for j in first] == ["g000", "g001", "g002", "g003", "g004"]
    # The groups served went to the back of the ring; the others did not move.
    ring = await raw(d, "ZRANGE", keys.ring, 0, 5)
    assert [bytes(m).decode() for m in ring] == [f"g{i:03}" for i in range(5, 11)]
    # Moving a group is a skiplist update, not a scan of a listpack (see groups.lua).
    assert await raw(d, "OBJECT", "ENCODING", keys.ring) == b"skiplist"
    assert problems(d.source_url) == []


async def test_a_full_group_leaves_the_ring_and_comes_back_with_room(
    driver: RedisDriver,
) -> None:
    d = driver
    keys = d._store.keys("q")
    await d.job_insert_many([grouped(f"j{i}", "A", concurrency=1) for i in range(3)], now=T0)
    [job] = await d.job_fetch(params(5), now=T0)
    assert await raw(d, "ZCOUNT", keys.ring, "-inf", "(+inf") == 0  # full: a fetch never reads it
    assert await d.job_fetch(params(5), now=T0) == []
    assert await d.group_wait(["q"], now=T0) is None  # waits for a job, not for time
    finish = FinishJob(job.id, job.lease_token or "", TransitionKind.COMPLETE)
    await d.job_finish_many([finish], retention=KEEP_ALL, now=T0 + 1)
    assert await raw(d, "ZCOUNT", keys.ring, "-inf", "(+inf") == 1
    assert await raw(d, "LLEN", keys.wake) == 1  # the freed place wakes a worker
    assert [j.id for j in await d.job_fetch(params(5), now=T0 + 1)] == ["j1"]
    assert problems(d.source_url) == []


async def test_idle_group_records_are_pruned_after_their_window(driver: RedisDriver) -> None:
    d = driver
    keys = d._store.keys("q")
    await d.job_insert_many([grouped("a", "A", rate_count=1, rate_per=60.0)], now=T0)
    await d.group_block("q", "B", 30.0, now=T0)  # a record with no job
    [job] = await d.job_fetch(params(1), now=T0)
    finish = FinishJob(job.id, job.lease_token or "", TransitionKind.COMPLETE)
    await d.job_finish_many([finish], retention=KEEP_ALL, now=T0 + 1)

    async def records() -> list[str]:
        found = await raw(d, "ZRANGE", keys.group_idle, 0, -1)
        assert isinstance(found, list)
        return sorted(bytes(m).decode() for m in found)

    async def kept() -> list[str]:
        found = await raw(d, "HKEYS", keys.group_records)
        assert isinstance(found, list)
        return sorted(bytes(m).decode() for m in found)

    assert await records() == ["A", "B"]
    assert await d.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 10) == 0
    assert await kept() == ["A", "B"]
    await d.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 31)  # B's block is over
    assert await kept() == ["A"]
    assert await raw(d, "EXISTS", keys.groups + "l:A") == 1
    await d.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 61)  # A's window passed
    assert await kept() == []
    assert await raw(d, "EXISTS", keys.groups + "l:A") == 0
    assert await records() == []

    # A job placed later makes the record anew, with its limits.
    await d.job_insert_many([grouped("b", "A", concurrency=3)], now=T0 + 70)
    record = await raw(d, "HGET", keys.group_records, "A")
    assert isinstance(record, bytes) and record.startswith(b"3,0,0.0,0,")
    assert problems(d.source_url) == []


async def test_a_queue_without_groups_has_no_group_keys(driver: RedisDriver) -> None:
    d = driver
    await d.job_insert_many([NewJob(f"p{i}", "q", "n", b"{}") for i in range(5)], now=T0)
    leased = await d.job_fetch(params(5), now=T0)
    finishes = [FinishJob(j.id, j.lease_token or "", TransitionKind.COMPLETE) for j in leased]
    await d.job_finish_many(finishes, retention=KEEP_ALL, now=T0)
    target = d._store.keys("q")
    client = d._store.client
    for key in (target.ring, target.group_idle, target.group_records):
        assert await client.execute_command("EXISTS", key) == 0
    assert await client.execute_command("HGET", target.meta, "gq") is None


async def test_a_fetch_handed_back_frees_its_group_place(redis_base_url: str) -> None:
    from conveyor.backends.redis import _stubs as stubs

    d = RedisDriver(redis_test_url(redis_base_url))
    await d.open()
    try:
        await d.job_insert_many([grouped(f"j{i}", "A", concurrency=1) for i in range(2)], now=T0)
        keys = d._store.keys("q")
        call = stubs.fetch_call(
            keys,
            now=T0,
            limit=5,
            lease_seconds=30.0,
            worker_id="w",
            promote_budget=10,
            receipt_ttl=60.0,
        )
        fetched = await stubs.fetch(d._store.client, call)
        assert len(fetched.rows) == 1
        await stubs.release(d._store.client, call)
        assert problems(d.source_url) == []
        record = await d._store.client.execute_command("HGET", keys.group_records, "A")
        assert record.split(b",")[3] == b"0"
        assert len(await d.job_fetch(params(5), now=T0)) == 1
    finally:
        await d.close()


def test_group_keys_share_the_queue_slot() -> None:
    from conveyor.backends.redis._keys import QueueKeys

    keys = QueueKeys("conveyor", "mail")
    # The scripts build a group's keys from this prefix: one hash tag whatever the group key.
    for built in (keys.groups + ":{x}", keys.groups + ":}{", keys.groups + "l:a"):
        assert key_slot(built.encode()) == key_slot(keys.meta.encode())
