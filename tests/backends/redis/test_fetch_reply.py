"""The fetch script reads each leased job whole and fills its reply row by field name: what a
worker receives must be the job as stored after the lease, whatever fields the job held before
(a previous attempt's start and token, a cancel request or isolated mark left behind, a group's
limits that are not part of a record). The finish script reads the fields a completion
needs first and the others only for the other transitions. The active set stays a skiplist
(its sentinel), which no count, listing, rescue or purge takes for a job."""

from __future__ import annotations

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._keys import ACTIVE_SENTINEL
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobRecord,
    JobState,
    ListParams,
    NewJob,
    PurgeParams,
    Retention,
    TransitionKind,
    TransitionStatus,
)
from tests.backends.redis.consistency import problems

T0 = 1_700_000_000.0
KEEP_ALL = Retention(completed_max_count=None, cancelled_max_age=None)


async def _fetch_one(d: RedisDriver, now: float) -> JobRecord:
    [job] = await d.job_fetch(FetchParams(("q",), 10, "w2", 30.0), now=now)
    return job


async def test_a_leased_job_is_returned_as_stored_after_its_lease(
    redis_driver: RedisDriver,
) -> None:
    d = redis_driver
    await d.job_insert_many([NewJob("a", "q", "n", b'{"x": 1}', max_attempts=5)], now=T0)
    key = d._store.keys("q").job("a")
    # What an earlier attempt and a crash could leave on a queued job: its start, token,
    # lease, worker, a cancel request and an isolated mark.
    await d._store.client.execute_command(
        "HSET", key, "b", "1699999990.5", "t", "old", "x", "1699999999.5", "w", "w1",
        "c", "1", "i", "1", "a", "2",
    )  # fmt: skip
    job = await _fetch_one(d, T0 + 1)
    assert job.state is JobState.ACTIVE
    assert job.attempt == 3
    assert job.started_at == T0 + 1
    assert job.lease_expires_at == T0 + 31
    assert job.worker_id == "w2"
    assert job.lease_token not in (None, "old")
    assert not job.cancel_requested and not job.isolated
    assert job.payload == b'{"x": 1}' and job.max_attempts == 5
    [stored] = await d.job_get_many(["a"])
    assert stored == job
    assert problems(d.source_url) == []


async def test_a_fresh_job_gets_every_lease_field(redis_driver: RedisDriver) -> None:
    d = redis_driver
    await d.job_insert_many([NewJob("a", "q", "n", b"{}", priority=0)], now=T0)
    job = await _fetch_one(d, T0)
    assert (job.state, job.attempt, job.started_at, job.worker_id) == (
        JobState.ACTIVE, 1, T0, "w2",
    )  # fmt: skip
    assert job.lease_token and job.lease_expires_at == T0 + 30
    [stored] = await d.job_get_many(["a"])
    assert stored == job


async def test_retried_jobs_come_back_with_their_history(redis_driver: RedisDriver) -> None:
    d = redis_driver
    await d.job_insert_many([NewJob("a", "q", "n", b"{}", max_attempts=3)], now=T0)
    first = await _fetch_one(d, T0)
    [status] = await d.job_finish_many(
        [FinishJob("a", first.lease_token or "", TransitionKind.RETRY, error="boom")],
        retention=KEEP_ALL,
        now=T0,
    )
    assert status.status is TransitionStatus.OK
    again = await _fetch_one(d, T0 + 1)
    assert (again.attempt, again.error, len(again.errors)) == (2, "boom", 1)
    assert again.lease_token != first.lease_token
    [stored] = await d.job_get_many(["a"])
    assert stored == again
    # The retry moved its run time and kept its enqueue time: read only by that transition.
    assert (again.run_at, again.enqueued_at) == (T0, T0)
    assert problems(d.source_url) == []


async def test_a_requeue_gives_back_the_attempt_and_keeps_the_place(
    redis_driver: RedisDriver,
) -> None:
    d = redis_driver
    await d.job_insert_many(
        [NewJob("a", "q", "n", b"{}", priority=5), NewJob("b", "q", "n", b"{}", priority=5)],
        now=T0,
    )
    [a, b] = await d.job_fetch(FetchParams(("q",), 2, "w", 30.0), now=T0)
    statuses = await d.job_finish_many(
        [
            FinishJob(a.id, a.lease_token or "", TransitionKind.REQUEUE),
            FinishJob(b.id, b.lease_token or "", TransitionKind.FAIL, error="bad"),
        ],
        retention=KEEP_ALL,
        now=T0 + 1,
    )
    assert [s.status for s in statuses] == [TransitionStatus.OK, TransitionStatus.OK]
    [ra, rb] = await d.job_get_many([a.id, b.id])
    assert ra is not None and rb is not None
    assert (ra.state, ra.attempt, ra.priority) == (JobState.QUEUED, 0, 5)
    assert (rb.state, rb.error, rb.finished_at) == (JobState.FAILED, "bad", T0 + 1)
    assert problems(d.source_url) == []


async def test_the_active_set_stays_a_skiplist_and_its_sentinel_is_no_job(
    redis_driver: RedisDriver,
) -> None:
    d = redis_driver
    client = d._store.client
    active = d._store.keys("q").active
    await d.job_insert_many([NewJob(f"j{i}", "q", "n", b"{}") for i in range(3)], now=T0)
    leased = await d.job_fetch(FetchParams(("q",), 2, "w", 30.0), now=T0)
    assert await client.execute_command("OBJECT", "ENCODING", active) == b"skiplist"
    assert await client.execute_command("ZSCORE", active, ACTIVE_SENTINEL) == b"inf"
    assert (await d.job_count_by_state("q"))[JobState.ACTIVE] == 2
    [info] = await d.queue_list()
    assert info.counts[JobState.ACTIVE] == 2
    listed = await d.job_list(ListParams("q", (JobState.ACTIVE,), limit=10))
    assert sorted(j.id for j in listed) == sorted(j.id for j in leased)
    assert problems(d.source_url) == []
    # Every job finished: the set holds its sentinel alone, and stays a skiplist.
    await d.job_finish_many(
        [FinishJob(j.id, j.lease_token or "", TransitionKind.COMPLETE) for j in leased],
        retention=KEEP_ALL,
        now=T0 + 1,
    )
    assert await client.execute_command("ZRANGE", active, 0, -1) == [ACTIVE_SENTINEL]
    assert (await d.job_count_by_state("q"))[JobState.ACTIVE] == 0
    # Rescue passes over it (its lease never expires), and purging active jobs leaves it.
    assert await d.job_expired(limit=10, now=T0 + 10**9) == []
    [third] = await d.job_fetch(FetchParams(("q",), 5, "w", 30.0), now=T0 + 2)
    assert await d.job_purge(PurgeParams("q", (JobState.ACTIVE,)), now=T0 + 2) == 1
    assert await d.job_get_many([third.id]) == [None]
    assert problems(d.source_url) == []


async def test_an_active_set_of_the_previous_layout_gets_its_sentinel(
    redis_driver: RedisDriver,
) -> None:
    d = redis_driver
    client = d._store.client
    active = d._store.keys("q").active
    await d.job_insert_many([NewJob(f"j{i}", "q", "n", b"{}") for i in range(3)], now=T0)
    [first] = await d.job_fetch(FetchParams(("q",), 1, "w", 30.0), now=T0)
    # As a worker of the previous layout leaves it: its leases only, a listpack.
    member, score = await client.execute_command("ZRANGE", active, 0, 0, "WITHSCORES")
    await client.execute_command("DEL", active)
    await client.execute_command("ZADD", active, score, member)
    assert await client.execute_command("OBJECT", "ENCODING", active) == b"listpack"
    assert (await d.job_count_by_state("q"))[JobState.ACTIVE] == 1
    [second] = await d.job_fetch(FetchParams(("q",), 1, "w", 30.0), now=T0)
    assert await client.execute_command("OBJECT", "ENCODING", active) == b"skiplist"
    assert (await d.job_count_by_state("q"))[JobState.ACTIVE] == 2
    # The job leased before the upgrade finishes, and is rescued once its lease is gone.
    [done] = await d.job_finish_many(
        [FinishJob(first.id, first.lease_token or "", TransitionKind.COMPLETE)],
        retention=KEEP_ALL,
        now=T0 + 1,
    )
    assert done.status is TransitionStatus.OK
    assert [j.id for j in await d.job_expired(limit=10, now=T0 + 31)] == [second.id]
    assert problems(d.source_url) == []
