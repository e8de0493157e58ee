"""Dedup records never outnumber jobs, on every backend: a key's record goes when the job that
holds it is deleted (prune, purge, retention trim), so a store that sees endless distinct keys
(the default key is a digest of the payload) does not grow without bound. Read from each
backend's own storage."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from conveyor.backends.memory.driver import MemoryDriver
from conveyor.backends.postgres._url import parse_url as parse_postgres_url
from conveyor.backends.redis._connection import parse_url as parse_redis_url
from conveyor.backends.redis._keys import QueueKeys
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    JobState,
    NewJob,
    PurgeParams,
    Retention,
    TransitionKind,
)
from tests.conformance.driver._support import T0, fetch, finish, new_job

pytestmark = pytest.mark.parametrize("backend_name", ["memory", "sqlite", "redis", "postgres"])


def records(driver: Driver, url: str) -> int:
    """How many dedup records the store holds (on Redis: checked consistent, too)."""
    if isinstance(driver, MemoryDriver):
        book = driver._store.dedup  # pyright: ignore[reportPrivateUsage]
        assert len(book.key_of) >= len(book.records)
        return len(book.records)
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            (count,) = conn.execute("SELECT count(*) FROM conveyor_dedup").fetchone()
            return int(count)
    if url.startswith("postgres"):
        import psycopg

        target = parse_postgres_url(url)
        with psycopg.connect(url.partition("?")[0]) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {target.quoted_schema}.conveyor_dedup".encode()
            ).fetchone()
            assert row is not None
            return int(row[0])
    import redis

    from tests.backends.redis.consistency import problems

    assert problems(url) == []
    target = parse_redis_url(url)
    keys = QueueKeys(target.prefix, "default")
    with redis.Redis.from_url(target.client_url) as client:
        count = int(client.hlen(keys.dedup))
        assert int(client.hlen(keys.dedup_jobs)) >= count
        return count


def keyed(job_id: str, mode: DedupMode, key: str, *, delay: float = 0.0) -> NewJob:
    seconds = 3600.0 if mode is DedupMode.THROTTLE else 0.0
    return dataclasses.replace(new_job(job_id, delay=delay), dedup=Dedup(mode, key, seconds))


async def test_records_go_with_the_jobs_that_hold_them(driver: Driver, backend_url: str) -> None:
    modes = [DedupMode.UNTIL_FINISHED, DedupMode.THROTTLE, DedupMode.UNTIL_STARTED]
    jobs = [keyed(f"j{n}", modes[n % 3], f"key{n}") for n in range(30)]
    jobs += [keyed(f"d{n}", DedupMode.DEBOUNCE, f"bounce{n}", delay=60) for n in range(5)]
    await driver.job_insert_many(jobs, now=T0)
    again = [keyed(f"r{n}", DedupMode.DEBOUNCE, f"bounce{n}", delay=60) for n in range(5)]
    await driver.job_insert_many(again, now=T0 + 1)  # replaced
    assert records(driver, backend_url) == 35

    # Completed with a retention of 5: the rest are trimmed as they complete.
    leased = await fetch(driver, now=T0 + 2, limit=20)
    for job in leased[:10]:
        await finish(driver, job, now=T0 + 3, retention=Retention(completed_max_count=5))
    assert records(driver, backend_url) == 30
    # Failed, then purged.
    for job in leased[10:]:
        await finish(driver, job, TransitionKind.FAIL, error="x", now=T0 + 4)
    assert await driver.job_purge(PurgeParams(states=(JobState.FAILED,)), now=T0 + 5) == 10
    assert records(driver, backend_url) == 20
    # Cancelled while waiting, then pruned by age; completed ones pruned by count.
    waiting = [f"j{n}" for n in range(20, 30)] + [f"d{n}" for n in range(5)]
    await driver.job_cancel_many(waiting, now=T0 + 6)
    retention = Retention(completed_max_count=0, cancelled_max_age=1)
    assert await driver.job_prune_finished(retention, limit=100, now=T0 + 10) == 20
    assert records(driver, backend_url) == 0
    assert await driver.job_count_by_state() == dict.fromkeys(JobState, 0)


async def test_a_key_taken_over_keeps_its_new_holders_record(
    driver: Driver, backend_url: str
) -> None:
    await driver.job_insert_many([keyed("a", DedupMode.UNTIL_STARTED, "k")], now=T0)
    [job] = await fetch(driver, now=T0 + 1)
    await driver.job_insert_many([keyed("b", DedupMode.UNTIL_STARTED, "k")], now=T0 + 2)
    await finish(driver, job, TransitionKind.FAIL, error="x", now=T0 + 3)
    await driver.job_purge(PurgeParams(states=(JobState.FAILED,)), now=T0 + 4)
    assert records(driver, backend_url) == 1  # b's, which a's deletion left alone
    [result] = await driver.job_insert_many([keyed("c", DedupMode.UNTIL_STARTED, "k")], now=T0 + 5)
    assert result.id == "b"


async def test_purging_waiting_jobs_drops_their_records(driver: Driver, backend_url: str) -> None:
    jobs = [keyed(f"q{n}", DedupMode.UNTIL_STARTED, f"k{n}") for n in range(3)]
    jobs += [keyed(f"s{n}", DedupMode.DEBOUNCE, f"d{n}", delay=60) for n in range(2)]
    await driver.job_insert_many(jobs, now=T0)
    states = (JobState.QUEUED, JobState.SCHEDULED)
    assert await driver.job_purge(PurgeParams(states=states), now=T0 + 1) == 5
    assert records(driver, backend_url) == 0
