"""SQLite-only behaviour of groups: the migration, the triggers that keep each group's counts,
what a fetch reads (query plans, virtual-machine steps), idle records, input checks."""

from __future__ import annotations

import itertools
import random
import sqlite3
from pathlib import Path

import pytest

from conveyor._errors import InvalidArgument
from conveyor.backends.sqlite import SQLiteDriver
from conveyor.backends.sqlite._connection import transaction
from conveyor.backends.sqlite._fetch import fetch, fetch_step, leased_rows
from conveyor.backends.sqlite._groups import Q as GROUP_QUERIES
from conveyor.backends.sqlite._sql import MIGRATIONS, QUERIES, split_statements
from conveyor.backends.sqlite._statements import finish_one
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
from conveyor.drivers.transactional import run_plan

T0 = 1_700_000_000.0


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _job(job_id: str, key: str | None, **options: object) -> NewJob:
    group = None if key is None else JobGroup(key, **options)  # type: ignore[arg-type]
    return NewJob(id=job_id, queue="q", name="test.job", payload=b"{}", group=group)


def _params(limit: int = 10, **options: object) -> FetchParams:
    return FetchParams(("q",), limit, "worker-1", 30.0, **options)  # type: ignore[arg-type]


async def _opened(path: Path) -> SQLiteDriver:
    driver = SQLiteDriver(_url(path))
    await driver.open()
    return driver


def _group_rows(path: Path) -> dict[str, tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key, queued, active FROM conveyor_group").fetchall()
    return {key: (queued, active) for key, queued, active in rows}


def _counted_from_jobs(path: Path) -> dict[str, tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT group_key, sum(state = 'queued'), sum(state = 'active') FROM conveyor_job"
            " WHERE group_key IS NOT NULL GROUP BY group_key"
        ).fetchall()
    return {key: (queued, active) for key, queued, active in rows}


# -- migration --------------------------------------------------------------------------------


async def test_jobs_stored_before_groups_stay_plain_and_runnable(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(QUERIES["migration__create_table"])
        for name, script in MIGRATIONS:
            if name >= "0007":
                break
            for statement in split_statements(script):
                conn.execute(statement)
            conn.execute(QUERIES["migration__record"], {"name": name, "now": 0})
        conn.execute(
            "INSERT INTO conveyor_job (id, queue, name, payload, state, max_attempts, run_at,"
            " enqueued_at, seq) VALUES ('old', 'q', 'n', x'7b7d', 'queued', 3, 0, 0, 1)"
        )
    driver = await _opened(path)
    try:
        assert await driver.migrate() == [name for name, _ in MIGRATIONS if name >= "0007"]
        [job] = await driver.job_fetch(_params(), now=T0)
        assert job.id == "old" and job.group is None
        assert _group_rows(path) == {}
    finally:
        await driver.close()


async def test_the_schema_has_the_group_records_indexes_and_triggers(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    await driver.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {
        "conveyor_group",
        "conveyor_group_ready_idx",
        "conveyor_group_named_idx",
        "conveyor_group_idle_idx",
        "conveyor_job_group_idx",
        "conveyor_group_insert",
        "conveyor_group_move",
        "conveyor_group_join",
        "conveyor_group_delete",
    } <= names


# -- what a fetch reads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "args", "index"),
    [
        (
            "group_fetch__head",
            {"queue": "q", "now": 0, "limit": 5},
            "conveyor_group_ready_idx (queue=? AND turn<?)",
        ),
        (
            "group_fetch__named",
            {"queue": "q", "name": "n", "now": 0, "limit": 5},
            "conveyor_group_named_idx (queue=? AND name=? AND turn<?)",
        ),
        (
            "group_fetch__jobs",
            {"queue": "q", "key": "k", "limit": 5},
            "conveyor_job_group_idx (queue=? AND group_key=?)",
        ),
        ("group_wait", {"queue": "q", "now": 0}, "conveyor_group_ready_idx (queue=? AND turn>?)"),
        (
            "group_wait__named",
            {"queue": "q", "name": "n", "now": 0},
            "conveyor_group_named_idx (queue=? AND name=? AND turn>?)",
        ),
        ("group_prune", {"now": 0, "limit": 5}, "conveyor_group_idle_idx (idle_until<?)"),
        (
            "group__eligible",
            {"queue": "q", "key": "k", "now": 0},
            "PRIMARY KEY (queue=? AND key=?)",
        ),
    ],
)
async def test_group_statements_read_an_index_range_in_order(
    tmp_path: Path, query: str, args: dict[str, object], index: str
) -> None:
    """A scan or a sort here would make every fetch cost what all groups or jobs cost."""
    driver = await _opened(tmp_path / "db.sqlite")
    await driver.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        plan = " ".join(
            str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + GROUP_QUERIES[query], args)
        )
    assert index in plan, plan
    assert "SCAN conveyor" not in plan and "TEMP B-TREE" not in plan, plan


async def test_the_plain_fetch_reads_no_grouped_job(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "db.sqlite")
    await driver.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:

        def plan(query: str, **args: object) -> str:
            rows = conn.execute("EXPLAIN QUERY PLAN " + QUERIES[query], args).fetchall()
            return " ".join(str(row) for row in rows)

        # The partial index holds plain jobs only, and the query still reads it in order.
        ready = plan("job_fetch__candidates", queue="q", limit=1)
        assert "conveyor_job_ready_idx (queue=?)" in ready and "TEMP B-TREE" not in ready, ready
        indexed = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'conveyor_job_ready_idx'"
        ).fetchone()[0]
        assert "group_key IS NULL" in indexed, indexed


def _fetch_steps(path: Path, params: FetchParams, now: float) -> tuple[int, list[str]]:
    """One fetch on a connection of our own, counted in SQLite virtual-machine steps."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.row_factory = sqlite3.Row
        steps = itertools.count()
        conn.set_progress_handler(lambda: next(steps) * 0, 50)
        rows = fetch(conn, params, [], now)
        conn.set_progress_handler(None, 0)
    return next(steps), [row["id"] for row in rows]


async def test_a_fetch_reads_as_many_groups_as_it_serves(tmp_path: Path) -> None:
    """However many groups wait, are full or hold jobs, a fetch of 5 costs about what it costs
    among a few: eligible groups come from an index by turn, each group's jobs from its range."""
    costs: list[int] = []
    for groups in (20, 4_000):
        path = tmp_path / f"groups-{groups}.sqlite"
        driver = await _opened(path)
        # Full groups (their one place taken) with jobs waiting behind...
        full = [
            _job(f"full-{n}-{i}", f"full:{n}", concurrency=1)
            for n in range(groups)
            for i in range(2)
        ]
        await driver.job_insert_many(full, now=T0)
        assert len(await driver.job_fetch(_params(limit=groups * 2), now=T0)) == groups
        # ...and eligible groups, one holding a flood.
        ready = [_job(f"ready-{n}", f"ready:{n}") for n in range(groups)]
        ready += [_job(f"flood-{i}", "flood") for i in range(groups)]
        await driver.job_insert_many(ready, now=T0 + 1)
        await driver.close()
        steps, leased = _fetch_steps(path, _params(limit=5), T0 + 2)
        assert len(leased) == 5
        costs.append(steps)
    assert costs[1] <= costs[0] * 2 + 5, costs


async def test_a_plain_fetch_and_finish_touch_groups_only_by_one_probe(tmp_path: Path) -> None:
    path = tmp_path / "plain.sqlite"
    driver = await _opened(path)
    await driver.job_insert_many([_job(f"p{i}", None) for i in range(20)], now=T0)
    await driver.close()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.row_factory = sqlite3.Row
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        leased = transaction(conn, lambda c: fetch_step(c, _params(limit=5), [], T0))
        fetched = list(statements)
        rows = leased_rows(conn, leased)
        statements.clear()
        finishes = [FinishJob(r["id"], r["lease_token"], TransitionKind.COMPLETE) for r in rows]
        transaction(conn, lambda c: [finish_one(c, finish, T0) for finish in finishes])
        conn.set_trace_callback(None)
    assert len(rows) == 5
    # The triggers' WHEN clauses let plain jobs through without touching a group record.
    touching = [s for s in fetched + statements if "conveyor_group" in s]
    assert len(touching) == 1 and "conveyor_group_ready_idx" in touching[0], touching
    assert _group_rows(path) == {}


# -- the counts, on every path ----------------------------------------------------------------


async def test_group_counts_follow_the_jobs_on_every_path(tmp_path: Path) -> None:
    """Random inserts, fetches, finishes of every kind, rescues, cancels, retries, purges and
    promotions: after each step the records count what the jobs say."""
    path = tmp_path / "counts.sqlite"
    driver = await _opened(path)
    rng = random.Random(7)
    now = T0
    serial = itertools.count()
    kinds = list(TransitionKind)
    seen: set[JobState] = set()
    try:
        for _ in range(250):
            now += rng.choice((0.0, 0.5, 3.0, 40.0))
            op = rng.randrange(8)
            if op <= 1:
                jobs = [
                    _job(
                        f"j{next(serial)}",
                        rng.choice(("a", "b", "c", None)),
                        concurrency=rng.choice((0, 1, 2)),
                    )
                    for _ in range(rng.randint(1, 4))
                ]
                jobs = [
                    NewJob(**{**_fields(j), "delay": rng.choice((0.0, 0.0, 5.0))}) for j in jobs
                ]
                await driver.job_insert_many(jobs, now=now)
            elif op <= 3:
                leased = await driver.job_fetch(_params(limit=rng.randint(1, 4)), now=now)
                finishes: list[FinishJob] = []
                for job in leased:
                    if rng.random() < 0.3:
                        continue  # left active, for a rescue to find
                    kind = rng.choice(kinds)
                    error = None if kind is TransitionKind.COMPLETE else "e"
                    delay = rng.choice((0.0, 2.0))
                    token = job.lease_token or ""
                    finishes.append(FinishJob(job.id, token, kind, error=error, delay=delay))
                await driver.job_finish_many(finishes, retention=Retention(), now=now)
            elif op == 4:
                expired = await driver.job_expired(limit=5, now=now)
                rescues = [
                    RescueJob(
                        job.id,
                        job.lease_token or "",
                        rng.choice((TransitionKind.REQUEUE, TransitionKind.FAIL)),
                        stalls=1,
                        error="lost",
                    )
                    for job in expired
                ]
                await driver.job_rescue_many(rescues, now=now)
            elif op == 5:
                some = [f"j{rng.randrange(max(next(serial), 1))}" for _ in range(3)]
                await driver.job_cancel_many(some, now=now)
                await driver.job_retry_many(some[:1], now=now)
            elif op == 6:
                await driver.job_promote_due(limit=10, now=now)
            elif rng.random() < 0.2:
                states = (rng.choice((JobState.QUEUED, JobState.FAILED, JobState.CANCELLED)),)
                await driver.job_purge(PurgeParams(queue="q", states=states), now=now)
            expected = _counted_from_jobs(path)
            recorded = {k: v for k, v in _group_rows(path).items() if v != (0, 0)}
            assert recorded == {k: v for k, v in expected.items() if v != (0, 0)}
            counts = await driver.job_count_by_state("q")
            seen.update(state for state, n in counts.items() if n)
        assert seen == set(JobState)  # the walk went through every state
    finally:
        await driver.close()


def _fields(job: NewJob) -> dict[str, object]:
    return {name: getattr(job, name) for name in NewJob.__dataclass_fields__}


async def test_a_grouped_job_written_on_the_callers_connection_joins_its_group(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.sqlite"
    driver = await _opened(path)
    try:
        plan = driver.insert_plan(
            [_job("mine-0", "k", concurrency=1), _job("mine-1", "k", concurrency=1)], now=T0
        )
        with sqlite3.connect(path, isolation_level=None) as conn:
            conn.execute("BEGIN IMMEDIATE")
            run_plan(plan, lambda s: conn.execute(s.sql, s.params).fetchall())
            conn.execute("COMMIT")
        assert _group_rows(path) == {"k": (2, 0)}
        assert [j.id for j in await driver.job_fetch(_params(), now=T0 + 1)] == ["mine-0"]
    finally:
        await driver.close()


# -- idle records and blocks ------------------------------------------------------------------


async def test_idle_records_go_once_their_window_and_block_pass(tmp_path: Path) -> None:
    path = tmp_path / "idle.sqlite"
    driver = await _opened(path)
    try:
        await driver.job_insert_many(
            [_job("r0", "rated", rate_count=1, rate_per=10.0), _job("p0", "plain-group")], now=T0
        )
        leased = await driver.job_fetch(_params(), now=T0)
        await driver.job_finish_many(
            [FinishJob(j.id, j.lease_token or "", TransitionKind.COMPLETE) for j in leased],
            retention=Retention(),
            now=T0,
        )
        await driver.group_block("q", "blocked", 20.0, now=T0)
        keep = Retention(completed_max_count=None)
        await driver.job_prune_finished(keep, limit=100, now=T0 + 1)
        assert set(_group_rows(path)) == {"rated", "blocked"}  # window and block not passed
        await driver.job_prune_finished(keep, limit=100, now=T0 + 10)
        assert set(_group_rows(path)) == {"blocked"}
        # Records have a budget of their own (finished jobs never crowd them out), and the
        # count returned is of jobs.
        await driver.group_block("q", "other", 1.0, now=T0)
        pruned = await driver.job_prune_finished(
            Retention(completed_max_count=0), limit=1, now=T0 + 30
        )
        assert pruned == 1
        assert len(_group_rows(path)) == 1
        await driver.job_prune_finished(keep, limit=1, now=T0 + 30)
        assert _group_rows(path) == {}
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("key", "seconds"),
    [("", 1.0), ("k" * 513, 1.0), ("k\x00", 1.0), (7, 1.0), ("k", -1.0), ("k", float("nan"))],
)
async def test_a_bad_block_is_refused_and_nothing_is_written(
    tmp_path: Path, key: object, seconds: float
) -> None:
    path = tmp_path / "block.sqlite"
    driver = await _opened(path)
    try:
        with pytest.raises(InvalidArgument):
            await driver.group_block("q", key, seconds, now=T0)  # type: ignore[arg-type]
    finally:
        await driver.close()
    assert _group_rows(path) == {}


async def test_group_wait_passes_over_paused_queues_and_other_names(tmp_path: Path) -> None:
    driver = await _opened(tmp_path / "wait.sqlite")
    try:
        await driver.job_insert_many([_job("a0", "k")], now=T0)
        await driver.group_block("q", "k", 5.0, now=T0)
        assert await driver.group_wait(["q"], now=T0 + 1) == pytest.approx(4.0)
        assert await driver.group_wait(["q"], names=["other.job"], now=T0 + 1) is None
        assert await driver.group_wait(["q"], names=["test.job"], now=T0 + 1) == pytest.approx(4)
        await driver.queue_pause("q")
        assert await driver.group_wait(["q"], now=T0 + 1) is None
    finally:
        await driver.close()
