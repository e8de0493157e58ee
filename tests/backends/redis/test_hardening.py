"""The Redis backend against what a careless neighbour or an unlucky moment can do: keys that
are not job hashes, lost fetch replies, cancels in between, entries whose jobs are gone."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis

from conveyor import UnsupportedURL
from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._connection import parse_url
from conveyor.backends.redis._fetching import RECEIPT_TTL
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._resp import ReplyError
from conveyor.drivers.records import FetchParams, JobState, NewJob, PurgeParams
from tests.backends.redis.consistency import problems
from tests.conftest import redis_test_url


@pytest.fixture
async def parts(redis_base_url: str) -> AsyncIterator[tuple[RedisDriver, aredis.Redis, QueueKeys]]:
    url = redis_test_url(redis_base_url)
    driver = RedisDriver(url)
    await driver.open()
    target = parse_url(url)
    raw = aredis.Redis.from_url(target.client_url)
    yield driver, raw, QueueKeys(target.prefix, "default")
    await raw.aclose()
    await driver.close()


def job(job_id: str) -> NewJob:
    return NewJob(job_id, "default", "t", b"{}")


PARAMS = FetchParams(("default",), 10, "w", 30.0)


async def test_an_insert_over_a_key_that_is_not_a_job_writes_nothing_and_says_why(
    parts: tuple[RedisDriver, aredis.Redis, QueueKeys],
) -> None:
    driver, raw, keys = parts
    await raw.set(keys.job("taken"), "someone else's string")
    with pytest.raises(ReplyError, match="is not a job hash"):
        await driver.job_insert_many([job("before"), job("taken"), job("after")])
    assert await driver.job_get_many(["before", "after"]) == [None, None]
    assert await raw.llen(keys.ready) == 0


async def test_a_fetch_drops_entries_that_name_no_queued_job_and_says_which(
    parts: tuple[RedisDriver, aredis.Redis, QueueKeys], caplog: pytest.LogCaptureFixture
) -> None:
    driver, raw, keys = parts
    await driver.job_insert_many([job("running")])
    await driver.job_fetch(PARAMS)
    await raw.set(keys.job("stray"), "not a hash")
    # A key that is not a job hash, an entry whose job is gone, and a second entry of a job
    # that already runs (as a lost dead-entry count would leave): none may stop the queue or
    # run anything twice, and each is reported.
    await raw.rpush(keys.ready, "stray", "vanished", "running")
    await driver.job_insert_many([job("real")])
    caplog.set_level(logging.WARNING, logger="conveyor.redis")
    assert [j.id for j in await driver.job_fetch(PARAMS)] == ["real"]
    dropped = {r.job_id: r.getMessage() for r in caplog.records if r.event == "dropped"}  # type: ignore[attr-defined]
    assert set(dropped) == {"stray", "vanished", "running"}
    assert "'default'" in dropped["stray"] and "no job hash" in dropped["stray"]
    assert "is gone" in dropped["vanished"]
    assert "the job is active, not queued" in dropped["running"]
    assert await raw.llen(keys.ready) == 0


async def test_a_receipt_outlives_a_retried_call_and_the_next_fetch_deletes_it(
    parts: tuple[RedisDriver, aredis.Redis, QueueKeys],
) -> None:
    """A fetch sent again after a 30 s reply timeout must still find its receipt (or it would
    lease other jobs and strand the first ones), however short the lease; and a worker's
    receipts must not pile up."""
    driver, raw, keys = parts
    await driver.job_insert_many([job("a"), job("b")])
    short = FetchParams(("default",), 1, "w", 5.0)

    async def receipts() -> list[bytes]:
        return [key async for key in raw.scan_iter(match=keys.tag + ":receipt:*")]

    await driver.job_fetch(short)
    [first] = await receipts()
    assert await raw.pttl(first) > (RECEIPT_TTL - 10) * 1000 > (30 + 5) * 1000
    await driver.job_fetch(short)
    [second] = await receipts()
    assert second != first
    assert await driver.job_fetch(short) == []  # nothing left: no receipt, the last one deleted
    assert await receipts() == []


async def test_a_released_receipt_leases_nothing_even_if_its_call_arrives_late(
    parts: tuple[RedisDriver, aredis.Redis, QueueKeys],
) -> None:
    driver, _, keys = parts
    await driver.job_insert_many([job("a")])
    call = stubs.fetch_call(
        keys, now=None, limit=5, lease_seconds=30, worker_id="w", promote_budget=10, receipt_ttl=300
    )
    # The release overtakes its lease call (sent behind a blocking pop still waiting).
    await stubs.release(driver._c, call)
    late = await stubs.fetch(driver._c, call)
    assert late.rows == []
    [a] = await driver.job_get_many(["a"])
    assert a is not None and a.state is JobState.QUEUED


async def test_a_release_cancels_a_job_whose_cancel_came_in_meanwhile(
    parts: tuple[RedisDriver, aredis.Redis, QueueKeys],
) -> None:
    driver, _, keys = parts
    await driver.job_insert_many([job("a")])
    call = stubs.fetch_call(
        keys, now=None, limit=5, lease_seconds=30, worker_id="w", promote_budget=10, receipt_ttl=300
    )
    await stubs.fetch(driver._c, call)  # the reply is lost...
    await driver.job_cancel_many(["a"])  # ...someone cancels the (active) job...
    await stubs.release(driver._c, call)  # ...and the lease is handed back
    [a] = await driver.job_get_many(["a"])
    assert a is not None and a.state is JobState.CANCELLED
    assert await driver.job_fetch(PARAMS) == []


async def test_purge_goes_past_entries_whose_jobs_are_already_gone(
    parts: tuple[RedisDriver, aredis.Redis, QueueKeys],
) -> None:
    driver, raw, keys = parts
    await raw.rpush(keys.ready, *[f"ghost-{n}" for n in range(1500)])
    await driver.job_insert_many([job(f"real-{n}") for n in range(5)])
    assert await driver.job_purge(PurgeParams(states=(JobState.QUEUED,))) == 5
    assert await raw.llen(keys.ready) == 0
    assert (await driver.job_count_by_state())[JobState.QUEUED] == 0


async def test_retention_trims_in_bounded_steps_and_maintenance_finishes_the_job(
    parts: tuple[RedisDriver, aredis.Redis, QueueKeys],
) -> None:
    from conveyor.drivers.records import FinishJob, Retention, TransitionKind

    driver, raw, keys = parts
    keep_all = Retention(completed_max_count=None)
    await driver.job_insert_many([job(f"j{n}") for n in range(1300)])
    for _ in range(13):
        leased = await driver.job_fetch(FetchParams(("default",), 100, "w", 30.0))
        finishes = [FinishJob(j.id, j.lease_token or "", TransitionKind.COMPLETE) for j in leased]
        await driver.job_finish_many(finishes, retention=keep_all)
    assert await raw.zcard(keys.completed) == 1300
    # Keeping 10 from now on: one completion trims at most 1,000...
    await driver.job_insert_many([job("last")])
    [last] = await driver.job_fetch(PARAMS)
    await driver.job_finish_many(
        [FinishJob(last.id, last.lease_token or "", TransitionKind.COMPLETE)],
        retention=Retention(completed_max_count=10),
    )
    assert await raw.zcard(keys.completed) == 301
    # ...and pruning takes care of the rest.
    assert await driver.job_prune_finished(Retention(completed_max_count=10), limit=1000) == 291
    assert await raw.zcard(keys.completed) == 10
    assert problems(driver.source_url) == []


def test_a_password_given_as_an_option_is_hidden_too() -> None:
    with pytest.raises(UnsupportedURL) as refused:
        parse_url("redis://h/0?password=s3cret&prefix={bad}")
    assert "s3cret" not in str(refused.value)
