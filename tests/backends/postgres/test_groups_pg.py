"""Groups on PostgreSQL beyond what the conformance suite sees: the counts each group record keeps
match its jobs on every path, concurrent fetches and finishes of the same groups neither deadlock
nor exceed a group's concurrency, idle records are pruned only once quiet, and the grouped
statements read indexes, no more jobs than they lease."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from conveyor import JobContext, Queue, Rate
from conveyor import job as job_definition
from conveyor.backends.postgres import PostgresDriver
from conveyor.backends.postgres._url import parse_url
from conveyor.core.clock import FakeClock
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    FetchParams,
    FinishJob,
    JobGroup,
    JobRecord,
    JobState,
    NewJob,
    PurgeParams,
    RescueJob,
    Retention,
    TransitionKind,
)
from conveyor.drivers.transactional import Row, Statement, run_plan
from tests.conformance.worker.helpers import WAIT_TIMEOUT, Harness
from tests.conftest import drop_test_schema, postgres_test_url

T0 = 1_700_000_000.0
Q = "default"


@pytest.fixture
def pg_url(postgres_base_url: str) -> Iterator[str]:
    url = postgres_test_url(postgres_base_url)
    yield url
    drop_test_schema(url)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresDriver]:
    driver = PostgresDriver(pg_url)
    await driver.open()
    try:
        yield driver
    finally:
        await driver.close()


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(parse_url(url).conninfo, autocommit=True)


def _schema(url: str) -> str:
    return parse_url(url).quoted_schema


def job(job_id: str, key: str | None, *, concurrency: int = 0, **options: Any) -> NewJob:
    group = None if key is None else JobGroup(key, concurrency=concurrency)
    return NewJob(job_id, Q, "test.job", b"{}", group=group, **options)


def records(url: str) -> dict[str, tuple[int, int]]:
    with _connect(url) as conn:
        rows = conn.execute(
            f"SELECT key, queued, active FROM {_schema(url)}.conveyor_group".encode()
        ).fetchall()
    return {key: (queued, active) for key, queued, active in rows}


def assert_counts_match_jobs(url: str) -> None:
    """Every group record counts exactly its queued and active jobs."""
    with _connect(url) as conn:
        rows = conn.execute(
            f"""SELECT g.key, g.queued, g.active,
                       count(j.id) FILTER (WHERE j.state = 'queued'),
                       count(j.id) FILTER (WHERE j.state = 'active')
                FROM {_schema(url)}.conveyor_group g
                LEFT JOIN {_schema(url)}.conveyor_job j
                       ON j.queue = g.queue AND j.group_key = g.key
                GROUP BY g.key, g.queued, g.active""".encode()
        ).fetchall()
        orphans = conn.execute(
            f"""SELECT count(*) FROM {_schema(url)}.conveyor_job j
                WHERE j.group_key IS NOT NULL AND j.state IN ('queued', 'active')
                  AND NOT EXISTS (SELECT 1 FROM {_schema(url)}.conveyor_group g
                                  WHERE g.queue = j.queue AND g.key = j.group_key)""".encode()
        ).fetchone()
    wrong = [row for row in rows if (row[1], row[2]) != (row[3], row[4])]
    assert not wrong, f"(key, queued, active, jobs queued, jobs active): {wrong}"
    assert orphans == (0,), "a queued or active grouped job has no group record"


async def fetch(pg: PostgresDriver, now: float, limit: int = 10) -> list[JobRecord]:
    return await pg.job_fetch(FetchParams((Q,), limit, "w", 30.0), now=now)


async def test_the_counts_follow_the_jobs_on_every_path(pg: PostgresDriver, pg_url: str) -> None:
    await pg.job_insert_many(
        [job(f"a{i}", "k:a", concurrency=2) for i in range(6)]
        + [job(f"b{i}", "k:b") for i in range(4)]
        + [job("s0", "k:a", run_at=T0 + 50), job("p0", None)],
        now=T0,
    )
    assert records(pg_url) == {"k:a": (6, 0), "k:b": (4, 0)}
    leased = await fetch(pg, T0 + 1)
    assert_counts_match_jobs(pg_url)
    kinds = [TransitionKind.COMPLETE, TransitionKind.REQUEUE, TransitionKind.RETRY]
    finishes = [
        FinishJob(j.id, j.lease_token or "", kinds[i % 3], error="e" if i % 3 == 2 else None)
        for i, j in enumerate(leased[:4])
    ]
    await pg.job_finish_many(finishes, retention=Retention(), now=T0 + 2)
    assert_counts_match_jobs(pg_url)
    left = [j for j in leased[4:]]
    await pg.job_rescue_many(
        [RescueJob(j.id, j.lease_token or "", TransitionKind.REQUEUE, 1, "lost") for j in left],
        now=T0 + 100,
    )
    assert_counts_match_jobs(pg_url)
    await pg.job_cancel_many(["a5", "b3", "s0"], now=T0 + 101)
    assert_counts_match_jobs(pg_url)
    await pg.job_retry_many(["a5", "b3"], now=T0 + 102)
    assert_counts_match_jobs(pg_url)
    await pg.job_insert_many([job("s1", "k:c", run_at=T0 + 103)], now=T0 + 102)
    assert await pg.job_promote_due(limit=100, now=T0 + 200) >= 1
    assert_counts_match_jobs(pg_url)
    again = await fetch(pg, T0 + 201, limit=3)
    await pg.job_purge(PurgeParams(queue=Q, states=(JobState.QUEUED, JobState.ACTIVE)))
    assert again and records(pg_url)["k:a"] == (0, 0)
    assert_counts_match_jobs(pg_url)


async def test_a_batch_with_keys_and_groups_and_a_callers_transaction_count_their_jobs(
    pg: PostgresDriver, pg_url: str
) -> None:
    keyed = [
        NewJob(
            f"d{i}",
            Q,
            "n",
            b"{}",
            dedup=Dedup(DedupMode.UNTIL_STARTED, f"x{i % 2}"),
            group=JobGroup(f"k:{i % 3}"),
        )
        for i in range(6)
    ]
    await pg.job_insert_many(keyed, now=T0)
    assert_counts_match_jobs(pg_url)
    assert sum(queued for queued, _ in records(pg_url).values()) == 2  # two keys, two jobs
    plan = pg.insert_plan([job("t0", "k:t"), job("t1", "k:t")], now=T0)
    with _connect(pg_url) as conn, conn.transaction():

        def execute(statement: Statement) -> list[Row]:
            cur = conn.execute(statement.sql.encode(), statement.params)
            return [] if cur.description is None else list(cur.fetchall())

        run_plan(plan, execute)
    assert records(pg_url)["k:t"] == (2, 0)
    assert_counts_match_jobs(pg_url)


async def test_concurrent_fetches_and_finishes_of_the_same_groups_neither_deadlock_nor_overrun(
    pg_url: str,
) -> None:
    """Workers on two drivers fetch and finish (complete, requeue, retry) jobs of five groups of
    concurrency 2 while a producer inserts batches whose groups come in varying orders and
    another cancels: no statement fails (a deadlock would), no sample of the jobs ever shows a
    group with more active jobs than its concurrency, and the counts end exact."""
    drivers = [PostgresDriver(pg_url), PostgresDriver(pg_url)]
    for d in drivers:
        await d.open()
    keys = [f"k:{i}" for i in range(5)]
    rng = random.Random(7)
    try:
        first = [job(f"j{i}", keys[i % 5], concurrency=2) for i in range(200)]
        await drivers[0].job_insert_many(first)
        stop = asyncio.Event()
        overrun: list[tuple[str, int]] = []

        async def worker(d: PostgresDriver, name: str) -> None:
            while not stop.is_set():
                jobs = await d.job_fetch(FetchParams((Q,), 4, name, 30.0))
                if not jobs:
                    await asyncio.sleep(0.005)
                    continue
                finishes = []
                for j in jobs:
                    roll = rng.random()
                    kind = (
                        TransitionKind.REQUEUE
                        if roll < 0.1 and j.attempt < 2
                        else TransitionKind.RETRY
                        if roll < 0.15 and j.attempt < 2
                        else TransitionKind.COMPLETE
                    )
                    error = "again" if kind is TransitionKind.RETRY else None
                    finishes.append(FinishJob(j.id, j.lease_token or "", kind, error=error))
                await d.job_finish_many(finishes, retention=Retention())

        async def producer() -> None:
            for batch in range(10):
                order = keys[:]
                rng.shuffle(order)
                await drivers[batch % 2].job_insert_many(
                    [job(f"n{batch}-{i}", order[i % 5], concurrency=2) for i in range(20)]
                )
                await drivers[1].job_cancel_many([f"j{rng.randrange(200)}" for _ in range(5)])
                await asyncio.sleep(0.01)

        async def monitor() -> None:
            with _connect(pg_url) as conn:
                while not stop.is_set():
                    for key, n in conn.execute(
                        f"SELECT group_key, count(*) FROM {_schema(pg_url)}.conveyor_job "
                        "WHERE state = 'active' GROUP BY group_key".encode()
                    ).fetchall():
                        if n > 2:
                            overrun.append((key, n))
                    await asyncio.sleep(0.002)

        async def drained() -> None:
            await producer()
            while True:
                counts = await drivers[0].job_count_by_state(Q)
                waiting = sum(counts[s] for s in (JobState.QUEUED, JobState.ACTIVE))
                if waiting + counts[JobState.RETRYING] == 0:
                    return
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(worker(drivers[i % 2], f"w{i}")) for i in range(4)] + [
            asyncio.create_task(monitor())
        ]
        try:
            await asyncio.wait_for(drained(), timeout=120)
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        assert not overrun, overrun
        assert_counts_match_jobs(pg_url)
        assert all(r == (0, 0) for r in records(pg_url).values())
    finally:
        for d in drivers:
            await d.close()


async def test_idle_records_are_pruned_once_their_window_and_block_have_passed(
    pg: PostgresDriver, pg_url: str
) -> None:
    await pg.job_insert_many(
        [NewJob("r0", Q, "n", b"{}", group=JobGroup("k:rate", rate_count=1, rate_per=60.0))],
        now=T0,
    )
    await pg.job_insert_many([job("w0", "k:waiting", run_at=T0), job("w1", "k:waiting")], now=T0)
    await pg.group_block(Q, "k:blocked", 120.0, now=T0)
    [leased] = await fetch(pg, T0, limit=1)  # k:rate before k:waiting (same turn, by key)
    assert leased.id == "r0"
    await pg.job_finish_many(
        [FinishJob("r0", leased.lease_token or "", TransitionKind.COMPLETE)],
        retention=Retention(),
        now=T0 + 1,
    )
    await pg.job_cancel_many(["w0", "w1"], now=T0 + 1)
    await pg.job_insert_many([job("q0", "k:queued")], now=T0 + 1)
    retention = Retention(completed_max_count=None)
    await pg.job_prune_finished(retention, limit=100, now=T0 + 30)
    assert set(records(pg_url)) == {"k:rate", "k:blocked", "k:queued"}  # k:waiting was idle
    await pg.job_prune_finished(retention, limit=100, now=T0 + 61)
    assert set(records(pg_url)) == {"k:blocked", "k:queued"}
    await pg.job_prune_finished(retention, limit=100, now=T0 + 121)
    assert set(records(pg_url)) == {"k:queued"}  # a group with a queued job stays
    # The pruned group comes back with its next job, its block gone.
    await pg.job_insert_many([job("b0", "k:blocked")], now=T0 + 122)
    assert "b0" in [j.id for j in await fetch(pg, T0 + 122)]


async def test_a_bad_group_block_is_refused(pg: PostgresDriver) -> None:
    from conveyor import InvalidArgument

    for key, seconds in (("", 1.0), ("k\x00", 1.0), ("x" * 513, 1.0), ("k", -1.0)):
        with pytest.raises(InvalidArgument):
            await pg.group_block(Q, key, seconds, now=T0)
    assert await pg.group_wait([], now=T0) is None


def _explain(url: str, query: bytes, args: dict[str, Any], analyze: bool = False) -> str:
    with _connect(url) as conn:
        head = b"EXPLAIN (ANALYZE, COSTS OFF) " if analyze else b"EXPLAIN "
        return "\n".join(row[0] for row in conn.execute(head + query, args).fetchall())


async def test_the_grouped_statements_read_indexes_and_no_more_jobs_than_they_lease(
    pg: PostgresDriver, pg_url: str
) -> None:
    for start in range(0, 20_000, 5_000):
        await pg.job_insert_many(
            [job(f"f{i}", "k:flood") for i in range(start, start + 5_000)], now=T0
        )
    await pg.job_insert_many([job(f"g{i}", f"k:{i}") for i in range(300)], now=T0 + 1)
    await pg.job_insert_many([job(f"p{i}", None) for i in range(2_000)], now=T0 + 1)
    with _connect(pg_url) as conn:
        for table in ("conveyor_job", "conveyor_group"):
            conn.execute(f"ANALYZE {_schema(pg_url)}.{table}".encode())
    q = pg._q  # pyright: ignore[reportPrivateUsage]
    common = {"lease_seconds": 30.0, "worker_id": "w", "receipt": "r"}
    fetched = _explain(
        pg_url,
        q["job_fetch__grouped"],
        {**common, "now": T0 + 2, "queues": [Q], "caps": [10], "limit": 10},
        analyze=True,
    )
    assert "Seq Scan" not in fetched, fetched
    assert "conveyor_group_eligible_idx" in fetched, fetched
    ready = [line for line in fetched.splitlines() if "conveyor_job_group_ready_idx" in line]
    assert ready, fetched
    # Each group's range is read for the jobs it starts: ten in all, of 20,300 queued.
    read = sum(
        int(line.split("rows=")[1].split()[0]) * int(line.split("loops=")[1].rstrip(")"))
        for line in ready
    )
    assert read <= 10, fetched
    plain = _explain(
        pg_url,
        q["job_fetch"],
        {**common, "now": T0 + 2, "queues": [Q], "limit": 10, "probe": True},
    )
    assert "Seq Scan on conveyor" not in plain, plain
    held = await fetch(pg, T0 + 3, limit=2)
    ids, tokens = [j.id for j in held], [j.lease_token for j in held]
    rescue = {
        "now": None,
        "channel": "c",
        "keep_errors": 20,
        "error_chars": 2000,
        "ids": ids,
        "tokens": tokens,
        "kinds": ["requeue"] * 2,
        "stalls": [1, 1],
        "errors": ["lost"] * 2,
        "cancel_errors": ["cancelled"] * 2,
    }
    finish = {
        "now": None,
        "channel": "c",
        "keep": 1000,
        "keep_errors": 20,
        "error_chars": 2000,
        "ids": ids,
        "tokens": tokens,
        "kinds": ["complete", "requeue"],
        "results": [b"1", None],
        "errors": [None, None],
        "cancel_errors": ["cancelled"] * 2,
        "delays": [0.0, 0.0],
    }
    changes = {"now": None, "ids": ["g1", "p1"], "channel": "c"}
    grouped_insert = {
        "now": None,
        "instance": None,
        "channel": "c",
        "ids": ["n1", "n2"],
        "queues": [Q, Q],
        "names": ["n", "n"],
        "payloads": [b"{}", b"{}"],
        "priorities": [0, 0],
        "max_attempts": [3, 3],
        "run_ats": [None, None],
        "delays": [0.0, 0.0],
        "keep_completeds": [None, None],
        "keep_faileds": [None, None],
        "group_keys": ["k:1", None],
        "group_concurrencies": [1, None],
        "group_rate_counts": [0, None],
        "group_rate_pers": [0.0, None],
        "headers": [None, None],
    }
    for name, args in (
        ("job_finish_many", finish),
        ("job_rescue_many", rescue),
        ("job_cancel_many", changes),
        ("job_retry_many", changes),
        ("job_promote_due", {"now": None, "limit": 10, "channel": "c"}),
        ("job_purge", {"states": ["failed"], "queue": Q, "finished_before": None}),
        ("job_insert_many__grouped", grouped_insert),
        ("group_wait", {"now": T0, "queues": [Q, "other"], "names": None}),
        ("job_prune_finished__groups", {"now": T0 + 9e5, "limit": 10}),
        ("job_fetch__group_promote", {"now": T0, "queues": [Q]}),
        ("listen__runnable", {"queues": [Q]}),
    ):
        text = _explain(pg_url, q[name], args)
        assert "Seq Scan on conveyor_group" not in text, f"{name}:\n{text}"
        assert "Seq Scan on conveyor_job" not in text, f"{name}:\n{text}"


async def test_a_job_with_a_looser_rate_frees_its_held_group_at_once(pg: PostgresDriver) -> None:
    slow = JobGroup("k:r", rate_count=1, rate_per=3600.0)
    await pg.job_insert_many([NewJob(f"r{i}", Q, "n", b"{}", group=slow) for i in range(2)], now=T0)
    assert [j.id for j in await fetch(pg, T0)] == ["r0"]
    assert await fetch(pg, T0 + 1) == []
    assert await pg.group_wait([Q], now=T0 + 1) == pytest.approx(3599.0)
    # A deploy drops the rate: the next job's limits hold from now on, as the reference does.
    await pg.job_insert_many([NewJob("r2", Q, "n", b"{}", group=JobGroup("k:r"))], now=T0 + 2)
    assert [j.id for j in await fetch(pg, T0 + 2)] == ["r1", "r2"]


class Account(BaseModel):
    account: str
    n: int


paced = job_definition(
    "test.group.paced_pg", Account, result=int, group_key=lambda p: p.account,
    group_rate=Rate(1, per=0.5),
)  # fmt: skip


async def test_a_turn_that_comes_while_another_transaction_holds_the_group_is_not_missed(
    pg_url: str,
) -> None:
    """A fetch skips a group record another transaction holds (FOR UPDATE SKIP LOCKED), and
    the question about held groups then names no turn still to come: the worker must look
    again once the holder lets go, not sleep until its poll interval (30 s here)."""
    queue = Queue.from_url(pg_url)
    await queue.connect()
    harness = Harness(queue, FakeClock())
    started: dict[int, float] = {}
    worker = harness.worker(clock=None, poll_interval=30.0, concurrency=4)

    @worker.handles(paced)
    async def handle(payload: Account, ctx: JobContext) -> int:
        started[payload.n] = time.monotonic()
        return payload.n

    holder = await psycopg.AsyncConnection.connect(parse_url(pg_url).conninfo, autocommit=True)
    try:
        harness.start(worker)
        await harness.registered(worker)
        first = await queue.enqueue(paced, Account(account="x", n=0))
        await first.result(timeout=WAIT_TIMEOUT)
        second = await queue.enqueue(paced, Account(account="x", n=1))  # its turn: 0.5 s on
        # Hold the group's record across that turn, then let go.
        async with holder.transaction():
            cur = await holder.execute(
                f"SELECT key FROM {_schema(pg_url)}.conveyor_group FOR UPDATE".encode()
            )
            assert len(await cur.fetchall()) == 1
            await asyncio.sleep(1.0)
        released = time.monotonic()
        assert await second.result(timeout=WAIT_TIMEOUT) == 1
        assert started[1] - released < 5.0
    finally:
        await holder.close()
        await harness.aclose()
        await queue.close()
