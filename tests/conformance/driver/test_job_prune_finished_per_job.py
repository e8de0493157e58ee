"""Retention per job: ``NewJob.keep_completed`` / ``keep_failed`` set an expiry when the job
finishes, and job_prune_finished deletes expired jobs first, bounded by ``limit``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    InsertStatus,
    JobState,
    PurgeParams,
    RescueJob,
    Retention,
    TransitionKind,
    TransitionStatus,
)

from ._support import LEASE, T0, exists, fetch, fetch_one, finish, get, insert, new_job

DAY = 24 * 3600.0
KEEP_ALL = Retention(completed_max_count=None, cancelled_max_age=None)


async def test_a_completed_job_with_a_ttl_is_kept_that_long(driver: Driver) -> None:
    await insert(driver, "ttl", keep_completed=60.0)
    await insert(driver, "plain")
    for job in await fetch(driver, limit=2):
        await finish(driver, job, now=T0 + 5, retention=KEEP_ALL, result=b'"r"')
    ttl = await get(driver, "ttl")
    assert (ttl.keep_completed, ttl.expires_at, ttl.result) == (60.0, T0 + 65, b'"r"')
    assert (await get(driver, "plain")).expires_at is None
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 64) == 0
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 65) == 1
    assert not await exists(driver, "ttl") and await exists(driver, "plain")


async def test_remove_on_completion_deletes_the_job_at_the_next_prune(driver: Driver) -> None:
    await insert(driver, "gone", keep_completed=0.0)
    await finish(driver, await fetch_one(driver), now=T0 + 1, retention=KEEP_ALL)
    assert (await get(driver, "gone")).expires_at == T0 + 1
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 1) == 1
    assert not await exists(driver, "gone")


async def test_keep_failed_applies_to_failures_only(driver: Driver) -> None:
    for job_id in ("failed", "cancelled", "completed", "rescued"):
        await insert(driver, job_id, keep_failed=DAY, max_attempts=1)
    jobs = {j.id: j for j in await fetch(driver, limit=4)}
    await finish(driver, jobs["failed"], TransitionKind.FAIL, now=T0, error="boom")
    await finish(driver, jobs["cancelled"], TransitionKind.CANCEL, now=T0, error="stop")
    await finish(driver, jobs["completed"], now=T0, retention=KEEP_ALL)
    assert (await get(driver, "failed")).expires_at == T0 + DAY
    assert (await get(driver, "cancelled")).expires_at is None
    assert (await get(driver, "completed")).expires_at is None
    # A job the rescuer fails (its lease expired) is a failure too.
    token = jobs["rescued"].lease_token
    assert token is not None
    lost = RescueJob("rescued", token, TransitionKind.FAIL, 1, "lost", jobs["rescued"].queue)
    [result] = await driver.job_rescue_many([lost], now=T0 + LEASE + 1)
    assert result.status is TransitionStatus.OK
    assert (await get(driver, "rescued")).expires_at == T0 + LEASE + 1 + DAY
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 2 * DAY) == 2
    assert [await exists(driver, i) for i in ("failed", "cancelled", "completed", "rescued")] == [
        False,
        True,
        True,
        False,
    ]


async def test_a_retried_job_loses_its_expiry(driver: Driver) -> None:
    await insert(driver, "a", keep_failed=10.0)
    await finish(driver, await fetch_one(driver), TransitionKind.FAIL, now=T0, error="x")
    assert (await get(driver, "a")).expires_at == T0 + 10
    await driver.job_retry_many(["a"], now=T0 + 1)
    assert (await get(driver, "a")).expires_at is None
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 100) == 0
    assert (await get(driver, "a")).state is JobState.QUEUED
    # It fails again: a new expiry from the new finish.
    again = await fetch_one(driver, now=T0 + 200)
    await finish(driver, again, TransitionKind.FAIL, now=T0 + 200, error="y")
    assert (await get(driver, "a")).expires_at == T0 + 210
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 209) == 0
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 210) == 1
    assert not await exists(driver, "a")


async def test_pruning_expired_jobs_is_bounded_by_limit(driver: Driver) -> None:
    ids = [f"j{n}" for n in range(5)]
    await insert(driver, *ids, keep_completed=0.0)
    for job in await fetch(driver, limit=5):
        await finish(driver, job, now=T0, retention=KEEP_ALL)
    assert await driver.job_prune_finished(KEEP_ALL, limit=2, now=T0 + 1) == 2
    assert await driver.job_prune_finished(KEEP_ALL, limit=0, now=T0 + 1) == 0
    assert await driver.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 1) == 3
    assert not any([await exists(driver, i) for i in ids])


async def test_the_queue_rules_still_apply_to_jobs_with_their_own(driver: Driver) -> None:
    # The earliest rule wins: a queue keeping one completed job deletes the older one, whatever
    # its own time-to-live says.
    await insert(driver, "old", keep_completed=DAY)
    await finish(driver, await fetch_one(driver), now=T0, retention=KEEP_ALL)
    await insert(driver, "new", keep_completed=DAY, now=T0 + 1)
    await finish(driver, await fetch_one(driver, now=T0 + 1), now=T0 + 1, retention=KEEP_ALL)
    assert (
        await driver.job_prune_finished(Retention(completed_max_count=1), limit=10, now=T0 + 2) == 1
    )
    assert not await exists(driver, "old") and await exists(driver, "new")
    assert await driver.job_prune_finished(KEEP_ALL, limit=10, now=T0 + DAY + 1) == 1
    assert not await exists(driver, "new")


async def test_a_purged_job_with_an_expiry_leaves_nothing_to_prune(driver: Driver) -> None:
    await insert(driver, "a", keep_failed=5.0)
    await finish(driver, await fetch_one(driver), TransitionKind.FAIL, now=T0, error="x")
    assert await driver.job_purge(PurgeParams(states=(JobState.FAILED,)), now=T0) == 1
    assert await driver.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 10) == 0


@pytest.mark.parametrize("keep", [-1.0, float("inf"), float("nan")])
async def test_an_invalid_retention_refuses_the_batch(driver: Driver, keep: float) -> None:
    with pytest.raises(InvalidArgument, match="keep_completed"):
        await driver.job_insert_many([new_job("ok"), new_job("bad", keep_completed=keep)], now=T0)
    assert not await exists(driver, "ok")


async def test_a_job_with_a_dedup_key_keeps_its_own_retention(driver: Driver) -> None:
    # Jobs with a dedup key take their own insert path on some backends; their retention must
    # travel with them all the same, and the job that frees its key on deletion is pruned.
    keyed = replace(
        new_job("keyed", keep_completed=30.0, keep_failed=DAY),
        dedup=Dedup(DedupMode.UNTIL_FINISHED, "k"),
    )
    await driver.job_insert_many([keyed], now=T0)
    stored = await get(driver, "keyed")
    assert (stored.keep_completed, stored.keep_failed) == (30.0, DAY)
    await finish(driver, await fetch_one(driver), now=T0 + 5, retention=KEEP_ALL)
    assert (await get(driver, "keyed")).expires_at == T0 + 35
    assert await driver.job_prune_finished(KEEP_ALL, limit=100, now=T0 + 35) == 1
    again = replace(new_job("again"), dedup=Dedup(DedupMode.UNTIL_FINISHED, "k"))
    [result] = await driver.job_insert_many([again], now=T0 + 36)
    assert (result.id, result.status) == ("again", InsertStatus.INSERTED)


async def test_a_job_pruned_at_its_expiry_frees_its_dedup_key(driver: Driver) -> None:
    # Even when its id is reused at once by a job without a key: the key is not held by that.
    keyed = replace(new_job("a", keep_completed=1.0), dedup=Dedup(DedupMode.UNTIL_FINISHED, "k"))
    await driver.job_insert_many([keyed], now=T0)
    await finish(driver, await fetch_one(driver), now=T0 + 2, retention=KEEP_ALL)
    assert await driver.job_prune_finished(KEEP_ALL, limit=10, now=T0 + 10) == 1
    await insert(driver, "a", now=T0 + 11)
    other = replace(new_job("b"), dedup=Dedup(DedupMode.UNTIL_FINISHED, "k"))
    [result] = await driver.job_insert_many([other], now=T0 + 12)
    assert (result.id, result.status) == ("b", InsertStatus.INSERTED)
