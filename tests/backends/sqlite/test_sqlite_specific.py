"""SQLite-only behaviour: URLs, migrations, errors, and several OS processes on one file."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conveyor._errors import BackendUnavailable, MigrationRequired, UnsupportedURL
from conveyor.backends.sqlite import SQLiteDriver, _connection
from conveyor.backends.sqlite._sql import MIGRATIONS, QUERIES, parse_queries
from conveyor.drivers.records import JobState, NewJob, PurgeParams

T0 = 1_700_000_000.0
ALL = [name for name, _ in MIGRATIONS]


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _applied(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name FROM conveyor_migration ORDER BY name").fetchall()


def _run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


# -- URLs -------------------------------------------------------------------------------------


def test_absolute_and_relative_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SQLiteDriver("sqlite:////abs/dir/x.db").path == "/abs/dir/x.db"
    assert SQLiteDriver("sqlite:///rel/x.db").path == "rel/x.db"
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        driver = SQLiteDriver("sqlite:///relative.db")
        await driver.open()
        await driver.close()

    asyncio.run(main())
    assert (tmp_path / "relative.db").exists()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///:memory:", "redis://x"]
)
def test_invalid_urls_are_refused_with_the_expected_forms(url: str) -> None:
    with pytest.raises(UnsupportedURL, match="sqlite:///"):
        SQLiteDriver(url)


async def test_connect_another_is_unopened_on_the_same_file(tmp_path: Path) -> None:
    driver = SQLiteDriver(_url(tmp_path / "a.db"))
    other = driver.connect_another()
    assert isinstance(other, SQLiteDriver) and other.path == driver.path and other is not driver
    with pytest.raises(RuntimeError, match="not open"):
        await other.job_count_by_state()


# -- migrations -------------------------------------------------------------------------------


async def test_migrations_are_applied_once_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    first = SQLiteDriver(_url(path))
    await first.open()
    assert await first.migrate() == ALL  # what open() applied
    assert await first.migrate() == []
    await first.close()
    second = SQLiteDriver(_url(path))
    await second.open()
    await second.open()  # opening twice is harmless
    assert await second.migrate() == []
    await second.close()
    assert _applied(path) == [(name,) for name, _ in MIGRATIONS]


async def test_migrate_opens_an_unopened_driver(tmp_path: Path) -> None:
    driver = SQLiteDriver(_url(tmp_path / "db.sqlite"))
    try:
        assert await driver.migrate() == ALL
    finally:
        await driver.close()


def test_processes_opening_a_new_file_at_once_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    code = """
        import asyncio, json, sys, time
        from conveyor.backends.sqlite import SQLiteDriver
        async def main():
            d = SQLiteDriver(sys.argv[1])
            while time.time() < float(sys.argv[2]):  # start together
                time.sleep(0.001)
            await d.open()
            print(json.dumps(await d.migrate()))
            await d.close()
        asyncio.run(main())
    """
    start = str(time.time() + 1.0)
    processes = [_run_python(code, _url(path), start) for _ in range(4)]
    reports = [json.loads(_finish(p)) for p in processes]
    assert sorted(reports, key=len) == [[], [], [], ALL]
    assert _applied(path) == [(name,) for name in ALL]


async def test_a_newer_schema_raises_migration_required(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    driver = SQLiteDriver(_url(path))
    await driver.open()
    await driver.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO conveyor_migration VALUES ('9999_from_the_future', 0)")
    newer = SQLiteDriver(_url(path))
    with pytest.raises(MigrationRequired, match="9999_from_the_future") as info:
        await newer.open()
    assert str(path) in str(info.value)
    await newer.close()


async def test_schema_has_the_tables_indexes_and_state_check(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    driver = SQLiteDriver(_url(path))
    await driver.open()
    await driver.close()
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {
            "conveyor_job",
            "conveyor_queue",
            "conveyor_worker",
            "conveyor_leader",
            "conveyor_migration",
            "conveyor_job_ready_idx",
            "conveyor_job_lease_idx",
            "conveyor_job_finished_idx",
            "conveyor_job_seq_idx",
            "conveyor_stats",
        } <= names
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO conveyor_job (id, queue, name, payload, state, max_attempts, run_at,"
                " enqueued_at, seq) VALUES ('x', 'q', 'n', x'', 'bogus', 1, 0, 0, 1)"
            )


def test_query_file_sections_hold_one_statement_each() -> None:
    assert "job_fetch" in QUERIES and "job_insert_many" in QUERIES
    with pytest.raises(ValueError, match="exactly one statement"):
        parse_queries("-- name: two\nSELECT 1; SELECT 2;\n")
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


async def test_fetch_reads_the_ready_index_in_order_without_sorting(tmp_path: Path) -> None:
    # A sort here would make every fetch cost O(waiting jobs log waiting jobs).
    path = tmp_path / "db.sqlite"
    driver = SQLiteDriver(_url(path))
    await driver.open()
    await driver.close()
    with sqlite3.connect(path) as conn:

        def plan(query: str, **args: object) -> str:
            rows = conn.execute("EXPLAIN QUERY PLAN " + QUERIES[query], args).fetchall()
            return " ".join(str(row) for row in rows)

        ready = plan("job_fetch__candidates", queue="q", limit=1)
        assert "conveyor_job_ready_idx" in ready and "TEMP B-TREE" not in ready, ready
        # A worker serving some names reads one range per name, and old jobs in run order.
        named = plan("job_fetch__candidates_named", queue="q", name="a", limit=1)
        assert "conveyor_job_named_idx (queue=? AND name=?)" in named, named
        assert "TEMP B-TREE" not in named, named
        unknown = plan(
            "job_fetch__candidates_unknown", queue="q", priority=0, unknown_before=0, limit=1
        )
        assert "conveyor_job_ready_idx (queue=? AND priority=? AND run_at<?)" in unknown, unknown
        priority = plan("job_fetch__next_priority", queue="q", after=0)
        assert "conveyor_job_ready_idx (queue=? AND priority>?)" in priority, priority
        assert "TEMP B-TREE" not in priority, priority
        assert "TEMP B-TREE" not in unknown, unknown
        promote = plan("job_fetch__promote", queue="q", now=0)
        assert "conveyor_job_due_idx (state=? AND run_at<?)" in promote, promote


@pytest.mark.parametrize(
    ("query", "args", "index"),
    [
        (
            "job_list",
            {"queue": "q", "state": "failed", "name": None, "before_seq": 10, "limit": 20},
            "conveyor_job_list_idx (queue=? AND state=? AND seq<?)",
        ),
        ("job_expired", {"now": 0, "limit": 10}, "conveyor_job_lease_idx"),
        (
            "job_prune_finished",
            {"state": "failed", "cutoff": 0, "limit": 10},
            "conveyor_job_age_idx (state=? AND finished_at<?)",
        ),
        (
            "job_prune_finished__trim_completed",
            {"queue": "q", "keep": 5, "limit": 10},
            "conveyor_job_finished_idx (queue=? AND state=?)",
        ),
        # A batch is looked up by id, job by job: not every active job against the batch.
        (
            "job_finish_many__complete_all",
            {"batch": "[]", "now": 0},
            "SEARCH conveyor_job USING INDEX sqlite_autoindex_conveyor_job_1 (id=?)",
        ),
        (
            "job_extend_leases",
            {"leases": "[]", "expires_at": 0},
            "SEARCH conveyor_job USING INDEX sqlite_autoindex_conveyor_job_1 (id=?)",
        ),
    ],
)
async def test_listing_and_retention_read_an_index_range_not_the_table(
    tmp_path: Path, query: str, args: dict[str, object], index: str
) -> None:
    """Before: one page of a listing filtered every job of the store. Each of these reads a
    range of an index, so its cost follows the page or batch, not how many jobs there are."""
    path = tmp_path / "db.sqlite"
    driver = SQLiteDriver(_url(path))
    await driver.open()
    await driver.close()
    with sqlite3.connect(path) as conn:
        plan = " ".join(
            str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + QUERIES[query], args)
        )
    assert index in plan, plan
    assert "SCAN conveyor_job" not in plan, plan


# -- errors -----------------------------------------------------------------------------------


async def test_missing_directory_is_backend_unavailable_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "x.db"
    driver = SQLiteDriver(_url(path))
    with pytest.raises(BackendUnavailable, match="no-such-dir") as info:
        await driver.open()
    assert str(path) in str(info.value)
    assert not path.parent.exists()


async def test_a_file_that_is_not_a_database_is_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(BackendUnavailable, match=r"junk\.db"):
        await SQLiteDriver(_url(path)).open()


async def test_a_held_write_lock_becomes_backend_unavailable_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_connection, "BUSY_TIMEOUT_SECONDS", 0.2)
    path = tmp_path / "db.sqlite"
    driver = SQLiteDriver(_url(path))
    await driver.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailable, match="locked") as info:
            await driver.job_insert_many([NewJob("a", "q", "n", b"{}")], now=T0)
        assert str(path) in str(info.value)
        blocker.execute("ROLLBACK")
        [result] = await driver.job_insert_many([NewJob("a", "q", "n", b"{}")], now=T0)
        assert result.status == "inserted"
    finally:
        blocker.close()
        await driver.close()


# -- seq --------------------------------------------------------------------------------------


async def test_seq_is_never_reused_after_the_newest_job_is_purged(tmp_path: Path) -> None:
    driver = SQLiteDriver(_url(tmp_path / "db.sqlite"))
    await driver.open()
    try:
        await driver.job_insert_many([NewJob("a", "q", "n", b"{}")], now=T0)
        [first] = await driver.job_get_many(["a"])
        await driver.job_purge(PurgeParams(states=(JobState.QUEUED,)), now=T0)
        await driver.job_insert_many([NewJob("b", "q", "n", b"{}")], now=T0)
        [second] = await driver.job_get_many(["b"])
        assert first is not None and second is not None and second.seq > first.seq
    finally:
        await driver.close()


# -- several processes --------------------------------------------------------------------------

_PRODUCER_CONSUMER = """
    import asyncio, json, sys
    from conveyor.backends.sqlite import SQLiteDriver
    from conveyor.drivers.records import FetchParams, FinishJob, NewJob, Retention, TransitionKind

    async def main():
        url, me, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
        d = SQLiteDriver(url)
        await d.open()
        completed, inserted = [], []
        keep_all = Retention(completed_max_count=None)

        async def work():
            jobs = await d.job_fetch(FetchParams(("q",), 3, me, 60.0))
            if jobs:
                finishes = [FinishJob(j.id, j.lease_token, TransitionKind.COMPLETE) for j in jobs]
                results = await d.job_finish_many(finishes, retention=keep_all)
                assert all(r.status == "ok" for r in results), results
                completed.extend(j.id for j in jobs)
            return bool(jobs)

        for b in range(batches):
            batch = [NewJob(f"{me}-{b}-{i}", "q", "n", b"{}") for i in range(4)]
            batch.append(NewJob(f"shared-{b}", "q", "n", b"{}"))  # every process inserts it
            results = await d.job_insert_many(batch)
            inserted.extend(r.id for r in results if r.status == "inserted")
            await work()
        while await work():
            pass
        await d.close()
        print(json.dumps({"completed": completed, "inserted": inserted}))

    asyncio.run(main())
"""


async def test_processes_inserting_and_fetching_on_one_file_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    url = _url(path)
    setup = SQLiteDriver(url)
    await setup.open()  # create the schema up front: this test is about the job traffic
    await setup.close()
    names, batches = ["p1", "p2", "p3"], 40
    processes = [_run_python(_PRODUCER_CONSUMER, url, name, str(batches)) for name in names]
    reports = [json.loads(_finish(p, timeout=120)) for p in processes]

    completed = [job_id for r in reports for job_id in r["completed"]]
    inserted = [job_id for r in reports for job_id in r["inserted"]]
    expected = {f"{n}-{b}-{i}" for n in names for b in range(batches) for i in range(4)}
    expected |= {f"shared-{b}" for b in range(batches)}
    assert len(inserted) == len(set(inserted)) and set(inserted) == expected
    # The last process to stop drains everything runnable, so nothing is left behind.
    assert len(completed) == len(set(completed)) and set(completed) == expected

    check = SQLiteDriver(url)
    await check.open()
    try:
        counts = await check.job_count_by_state()
    finally:
        await check.close()
    assert counts[JobState.COMPLETED] == len(expected) and sum(counts.values()) == len(expected)


async def test_listen_wakes_when_another_process_commits(tmp_path: Path) -> None:
    url = _url(tmp_path / "db.sqlite")
    listener = SQLiteDriver(url)
    await listener.open()
    try:
        code = """
            import asyncio, sys
            from conveyor.backends.sqlite import SQLiteDriver
            from conveyor.drivers.records import NewJob
            async def main():
                d = SQLiteDriver(sys.argv[1])
                await d.open()
                await d.job_insert_many([NewJob("a", "q", "n", b"{}")])
                await d.close()
            asyncio.run(main())
        """
        listening = asyncio.create_task(listener.listen(["q"], 30))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", textwrap.dedent(code), url
        )
        assert await process.wait() == 0
        started = time.monotonic()
        await asyncio.wait_for(listening, timeout=10)
        assert time.monotonic() - started < 5
        assert (await listener.job_count_by_state())[JobState.QUEUED] == 1
    finally:
        await listener.close()


@pytest.mark.parametrize(("query", "expected"), [("", 1), ("?synchronous=full", 2)])
async def test_the_synchronous_option_sets_the_durability_level(
    tmp_path: Path, query: str, expected: int
) -> None:
    driver = SQLiteDriver(_url(tmp_path / "db.sqlite") + query)
    await driver.open()
    try:
        level = await driver._db.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await driver.close()
    assert level == expected  # 1 = NORMAL, 2 = FULL


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?synchronus=full", "unknown SQLite URL option 'synchronus'"),
        ("?synchronous=off", "got 'off'"),
    ],
)
def test_a_misspelt_or_unsafe_option_is_refused(tmp_path: Path, query: str, message: str) -> None:
    with pytest.raises(UnsupportedURL, match=message):
        SQLiteDriver(_url(tmp_path / "db.sqlite") + query)


@pytest.mark.parametrize("unknown_before", [None, T0 - 3600])
async def test_a_name_filtered_fetch_costs_the_same_behind_many_jobs_of_other_names(
    tmp_path: Path, unknown_before: float | None
) -> None:
    """Before: a worker serving some names read the ready index past every job of other names
    queued ahead of its own (another fleet's backlog), on every fetch. Counted in SQLite
    virtual-machine steps: 5,000 jobs ahead cost about what 100 do."""
    from conveyor.backends.sqlite._statements import fetch_candidates

    costs: list[int] = []
    for ahead in (100, 5_000):
        path = tmp_path / f"ahead-{ahead}.sqlite"
        driver = SQLiteDriver(_url(path))
        await driver.open()
        jobs = [
            NewJob(id=f"other-{n}", queue="q", name="report.build", payload=b"{}")
            for n in range(ahead)
        ]
        jobs += [
            NewJob(id=f"mine-{n}", queue="q", name="email.send", payload=b"{}") for n in range(5)
        ]
        await driver.job_insert_many(jobs, now=T0)
        await driver.close()
        with sqlite3.connect(path) as conn:
            conn.row_factory = sqlite3.Row
            steps = itertools.count()
            conn.set_progress_handler(lambda steps=steps: next(steps) * 0, 100)
            found = fetch_candidates(conn, "q", 3, ("email.send",), unknown_before)
            conn.set_progress_handler(None, 0)
        assert sorted(i for _, i in found)[:3] == ["mine-0", "mine-1", "mine-2"]
        costs.append(next(steps))
    assert costs[1] <= costs[0] * 2 + 5, costs
