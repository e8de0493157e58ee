"""How queued jobs are laid out: a waiting job costs little memory, and listing still pages them.

Jobs appended to the ready list (almost every queued job) have no listing-index entry, as the
list is in seq order itself: a waiting job costs its hash and its list entry. Jobs placed again
with their old seq (requeued, rescued) or with a priority live in the queued set and its index;
a listing merges both, newest first, passing over the stale entries cancels leave behind.
Measured on a private server, so that no other test's keys count.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from conveyor.backends.redis import RedisDriver
from conveyor.backends.redis._connection import parse_url
from conveyor.backends.redis._keys import QueueKeys
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobState,
    ListParams,
    NewJob,
    Retention,
    TransitionKind,
)
from tests.backends.redis.consistency import problems
from tests.conftest import redis_test_url
from tests.servers.redis_server import RedisServer

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as private:
        yield private


@pytest.fixture
def url(server: RedisServer) -> str:
    return redis_test_url(server.url)


def used_memory(raw: redis.Redis) -> int:
    return int(raw.info("memory")["used_memory"])


async def test_a_queued_job_costs_its_hash_and_a_list_entry(server: RedisServer) -> None:
    n = 20_000
    # Like a producer's jobs: 32-character ids, a short name and payload; a short prefix (the
    # key of every job hash carries it) of this module's only queue named "mem".
    jobs = [NewJob(uuid.uuid4().hex, "mem", "noop", b'{"ts":0.0}') for _ in range(n)]
    driver = RedisDriver(f"{server.url}?prefix=m")
    await driver.open()
    try:
        await driver.job_insert_many(jobs[:1])  # the queue's own keys, before measuring
        with redis.Redis.from_url(server.url) as raw:
            before = used_memory(raw)
            for start in range(1, n, 1000):
                await driver.job_insert_many(jobs[start : start + 1000])
            per_job = (used_memory(raw) - before) / (n - 1)
        counts = await driver.job_count_by_state("mem")
        assert counts[JobState.QUEUED] == n
        # About 220 bytes; an index entry per job (score and id in a sorted set's skiplist and
        # dict) would add some 150.
        assert per_job < 230, f"{per_job:.0f} bytes per queued job"
        page = await driver.job_list(ListParams(queue="mem", limit=3))
        assert [j.id for j in page] == [j.id for j in jobs[::-1][:3]]
    finally:
        await driver.close()


async def listed_in_pages(driver: RedisDriver, queue: str, size: int, **more: object) -> list[str]:
    """Every queued job of ``queue``, newest first, read ``size`` at a time."""
    ids: list[str] = []
    before: int | None = None
    while True:
        page = await driver.job_list(
            ListParams(queue=queue, states=(JobState.QUEUED,), before_seq=before, limit=size)
        )
        ids += [j.id for j in page]
        if len(page) < size:
            return ids
        before = page[-1].seq


async def test_listing_merges_the_ready_list_and_the_queued_set(url: str) -> None:
    driver = RedisDriver(url)
    await driver.open()
    try:
        await driver.job_insert_many([NewJob(f"a{n}", "mix", "t", b"{}") for n in range(10)])
        # Two jobs fetched and requeued keep their (old) seq: the queued set takes them.
        leased = await driver.job_fetch(FetchParams(("mix",), 3, "w", 30.0))
        requeue = [
            FinishJob(j.id, j.lease_token or "", TransitionKind.REQUEUE)
            for j in leased
            if j.id != "a1"
        ]
        await driver.job_finish_many(requeue, retention=Retention())
        await driver.job_insert_many([NewJob(f"b{n}", "mix", "t", b"{}") for n in range(10)])
        # Cancels leave stale entries; a retried one gets a new seq, in the queued set too, as
        # its stale entry is still in the list.
        await driver.job_cancel_many(["a5", "b3", "b7", "b9"])
        await driver.job_retry_many(["a5"])
        await driver.job_insert_many(
            [NewJob(f"p{n}", "mix", "t", b"{}", priority=5) for n in range(3)]
        )
        await driver.job_insert_many([NewJob(f"c{n}", "mix", "t", b"{}") for n in range(4)])

        everything = await driver.job_list(ListParams(queue="mix", limit=1000))
        queued = sorted((j for j in everything if j.state is JobState.QUEUED), key=lambda j: -j.seq)
        expected = [j.id for j in queued]
        # The retried a5 (new seq) and the requeued a0 and a2 (old seqs, behind the list's a3)
        # lie among the ready list's jobs by seq.
        assert expected == [
            *("c3", "c2", "c1", "c0", "p2", "p1", "p0", "a5"),
            *("b8", "b6", "b5", "b4", "b2", "b1", "b0"),
            *("a9", "a8", "a7", "a6", "a4", "a3", "a2", "a0"),
        ]
        for size in (1, 2, 3, 7, 50):
            assert await listed_in_pages(driver, "mix", size) == expected, size
        counts = await driver.job_count_by_state("mix")
        assert counts[JobState.QUEUED] == len(expected)
        assert counts[JobState.CANCELLED] == 3
        assert problems(url) == []

        # Fetching drains both, in run order; listing and counts follow.
        taken = await driver.job_fetch(FetchParams(("mix",), 12, "w", 30.0))
        left = [i for i in expected if i not in {j.id for j in taken}]
        assert await listed_in_pages(driver, "mix", 4) == left
        counts = await driver.job_count_by_state("mix")
        assert counts[JobState.QUEUED] == len(left)
        assert problems(url) == []
    finally:
        await driver.close()


async def test_a_page_of_a_large_queue_costs_about_the_same(server: RedisServer, url: str) -> None:
    """A later page of 300,000 queued jobs: a bisection, not a walk of the list."""
    driver = RedisDriver(url)
    await driver.open()
    try:
        n = 300_000
        for start in range(0, n, 5000):
            jobs = [NewJob(f"big{i:07}", "big", "t", b"{}") for i in range(start, start + 5000)]
            await driver.job_insert_many(jobs, now=T0)
        first = await driver.job_list(ListParams(queue="big", limit=20))
        middle = await driver.job_list(
            ListParams(queue="big", limit=1, before_seq=first[0].seq - n // 2)
        )
        timings = []
        for before in (first[-1].seq, middle[0].seq, first[0].seq - n + 40):
            began = time.perf_counter()
            page = await driver.job_list(ListParams(queue="big", limit=20, before_seq=before))
            timings.append(time.perf_counter() - began)
            assert len(page) == 20 and all(j.seq < before for j in page)
        # Milliseconds each, however deep the page (a walk of the list would take far longer).
        assert max(timings) < 0.1, timings
    finally:
        await driver.close()


async def test_listing_passes_over_a_bulk_cancel(url: str) -> None:
    """A run of stale entries longer than a bisection step looks and than a call reads."""
    driver = RedisDriver(url)
    await driver.open()
    try:
        ids = [f"s{n:05}" for n in range(6_000)]
        for start in range(0, len(ids), 1000):
            await driver.job_insert_many(
                [NewJob(i, "bulk", "t", b"{}") for i in ids[start:][:1000]]
            )
        gone = set(ids[1_000:4_500]) | set(ids[5_000:5_990])
        await driver.job_cancel_many(sorted(gone))
        live = [i for i in ids if i not in gone][::-1]
        for size in (7, 20, 500):
            assert await listed_in_pages(driver, "bulk", size) == live, size
        seqs = {j.id: j.seq for j in await driver.job_get_many(ids) if j is not None}
        # A page from inside the runs, and from just above them.
        for start in ("s03000", "s04500", "s05500", "s00999"):
            page = await driver.job_list(
                ListParams(queue="bulk", states=(JobState.QUEUED,), before_seq=seqs[start])
            )
            below = [i for i in live if seqs[i] < seqs[start]]
            assert [j.id for j in page] == below[:50], start
        counts = await driver.job_count_by_state("bulk")
        assert counts[JobState.QUEUED] == len(live)
        assert problems(url) == []
    finally:
        await driver.close()


async def test_a_store_indexed_by_the_older_layout_lists_and_counts_each_job_once(
    server: RedisServer, url: str
) -> None:
    """Before, every queued job had an index entry: such entries list and count nothing twice,
    and go as their jobs are fetched."""
    driver = RedisDriver(url)
    await driver.open()
    try:
        await driver.job_insert_many([NewJob(f"o{n}", "old", "t", b"{}") for n in range(30)])
        keys = QueueKeys(parse_url(url).prefix, "old")
        with redis.Redis.from_url(server.url) as raw:
            seqs = {f"o{n}": int(raw.hget(keys.job(f"o{n}"), "q") or 0) for n in range(30)}
            raw.zadd(keys.by_seq(JobState.QUEUED), seqs)
        expected = [f"o{n}" for n in range(29, -1, -1)]
        for size in (4, 50):
            assert await listed_in_pages(driver, "old", size) == expected
        assert (await driver.job_count_by_state("old"))[JobState.QUEUED] == 30
        await driver.job_fetch(FetchParams(("old",), 10, "w", 30.0))
        assert await listed_in_pages(driver, "old", 4) == expected[:20]
        assert (await driver.job_count_by_state("old"))[JobState.QUEUED] == 20
    finally:
        await driver.close()
