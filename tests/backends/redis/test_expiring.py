"""The Redis expiring set: every job with an expiry of its own has exactly one entry, scored by
that expiry, through completion, failure, retry, purge and both kinds of prune."""

from __future__ import annotations

from conveyor.backends.redis import RedisDriver
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobState,
    NewJob,
    PurgeParams,
    Retention,
    TransitionKind,
)
from tests.backends.redis.consistency import problems

T0 = 1_700_000_000.0
KEEP_ALL = Retention(completed_max_count=None, cancelled_max_age=None)


async def _finish(
    d: RedisDriver, ids: list[str], kind: TransitionKind, now: float, retention: Retention
) -> None:
    leased = await d.job_fetch(FetchParams(("q",), len(ids), "w", 30.0), now=now)
    assert sorted(j.id for j in leased) == sorted(ids)
    finishes = [
        FinishJob(j.id, j.lease_token or "", kind, error=None if kind.value == "complete" else "x")
        for j in leased
    ]
    await d.job_finish_many(finishes, retention=retention, now=now)


async def test_entries_follow_their_jobs(redis_driver: RedisDriver) -> None:
    d = redis_driver
    jobs = [NewJob(i, "q", "n", b"{}", keep_completed=10.0, keep_failed=20.0) for i in "abcd"]
    await d.job_insert_many(jobs, now=T0)
    await _finish(d, ["a", "b"], TransitionKind.COMPLETE, T0, KEEP_ALL)
    await _finish(d, ["c", "d"], TransitionKind.FAIL, T0, KEEP_ALL)
    assert problems(d.source_url) == []
    assert await d._store.client.execute_command("ZCARD", d._store.keys("q").expiring) == 4

    await d.job_retry_many(["c"], now=T0 + 1)  # its entry goes with its expiry
    assert problems(d.source_url) == []
    assert await d.job_purge(PurgeParams("q", (JobState.FAILED,)), now=T0 + 1) == 1  # d
    assert problems(d.source_url) == []
    # A count prune of completed jobs takes their entries too.
    assert await d.job_prune_finished(Retention(completed_max_count=1), limit=10, now=T0 + 2) == 1
    assert problems(d.source_url) == []
    assert await d.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 10) == 1
    assert problems(d.source_url) == []
    assert await d._store.client.execute_command("ZCARD", d._store.keys("q").expiring) == 0
    # The retried job fails again: a new entry, pruned when due.
    await _finish(d, ["c"], TransitionKind.FAIL, T0 + 20, KEEP_ALL)
    assert problems(d.source_url) == []
    assert await d.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 40) == 1
    assert problems(d.source_url) == []


async def test_completing_beyond_the_count_takes_the_entries_of_the_trimmed(
    redis_driver: RedisDriver,
) -> None:
    d = redis_driver
    await d.job_insert_many(
        [NewJob(i, "q", "n", b"{}", keep_completed=60.0) for i in "abc"], now=T0
    )
    await _finish(d, ["a", "b", "c"], TransitionKind.COMPLETE, T0, Retention(completed_max_count=1))
    assert problems(d.source_url) == []
    assert await d._store.client.execute_command("ZCARD", d._store.keys("q").expiring) == 1
