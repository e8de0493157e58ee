"""``conveyor jobs retry --all-failed`` and ``conveyor jobs purge``: pages of jobs retried or
deleted batch by batch, over more jobs than one batch, bounded by --limit, filtered by queue,
name and age, and stopped between two batches by Ctrl-C with every job either changed or as it
was."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conveyor import JobState, Queue
from conveyor.cli import cli
from tests.cli._helpers import cli_env, fail_jobs, run_on_terminal, start
from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return redis_test_url(request.getfixturevalue("redis_base_url"))
    if request.param == "postgres":
        url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
        request.addfinalizer(lambda: drop_test_schema(url))
        return url
    return f"sqlite:///{tmp_path / 'retry.db'}"


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args], catch_exceptions=False)


def seed(url: str, default: int, other: int = 0) -> None:
    async def go() -> None:
        async with Queue.from_url(url) as q:
            await fail_jobs(q, default, name="d")
            if other:
                await fail_jobs(q, other, queue="other", name="o")

    asyncio.run(go())


def counts(url: str, queue: str | None = None) -> dict[JobState, int]:
    async def go() -> dict[JobState, int]:
        async with Queue.from_url(url) as q:
            return await q.counts(queue)

    return asyncio.run(go())


def test_retries_more_failed_jobs_than_one_batch(url: str) -> None:
    seed(url, 1203, other=7)
    out = run(url, "jobs", "retry", "--all-failed", "--queue", "default")
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "retried 1203 failed job(s)"
    assert counts(url, "default").get(JobState.FAILED, 0) == 0
    assert counts(url, "default")[JobState.QUEUED] == 1203
    assert counts(url, "other")[JobState.FAILED] == 7  # another queue: left alone


def test_limit_bounds_the_run_and_says_there_may_be_more(url: str) -> None:
    seed(url, 1100)
    out = run(url, "jobs", "retry", "--all-failed", "--limit", "700", "--batch-size", "300")
    assert out.exit_code == 0, out.output
    assert "retried 700 failed job(s); stopped at --limit 700: run it again for more" in out.stdout
    assert (counts(url)[JobState.QUEUED], counts(url)[JobState.FAILED]) == (700, 400)
    report = json.loads(run(url, "jobs", "retry", "--all-failed", "--json").stdout)
    assert (report["changed"], report["limit_reached"]) == (400, False)
    assert counts(url).get(JobState.FAILED, 0) == 0


def test_a_limit_that_falls_on_the_last_job_is_not_reported_as_more(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    seed(url, 10)
    out = run(url, "jobs", "retry", "--all-failed", "--limit", "10", "--batch-size", "5")
    assert out.stdout.strip().startswith("retried 10 failed job(s)")


def test_filters_by_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    seed(url, 4, other=3)  # test.ping on default, test.pong on other
    out = run(url, "jobs", "retry", "--all-failed", "--name", "test.pong", "--batch-size", "2")
    assert out.exit_code == 0 and "retried 3 failed job(s)" in out.stdout
    assert counts(url, "default")[JobState.FAILED] == 4
    bad = CliRunner().invoke(cli, ["--url", url, "jobs", "retry", "--name", "test.pong"])
    assert bad.exit_code == 2 and "--all-failed" in bad.output


def test_named_jobs_and_all_failed_together(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    seed(url, 3)
    out = CliRunner().invoke(cli, ["--url", url, "jobs", "retry", "d-0", "nope", "--all-failed"])
    assert out.exit_code == 1  # a named job could not be retried
    assert "retried d-0" in out.stdout and "retried 2 failed job(s)" in out.stdout
    assert "not retried nope: not_found" in out.stderr


def test_shows_a_progress_bar_on_a_terminal_and_a_summary(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    seed(url, 600)
    code, out = run_on_terminal(
        ["--url", url, "jobs", "retry", "--all-failed", "--batch-size", "100"], cli_env()
    )
    assert code == 0, out
    assert "retrying failed jobs" in out and "600/600" in out  # the bar's last frame
    assert "retried 600 failed job(s)" in out

    async def fail_again() -> None:  # retried jobs (fail_jobs fails what it leases), again
        async with Queue.from_url(url) as q:
            await fail_jobs(q, 100, name="more")

    asyncio.run(fail_again())
    failed = counts(url)[JobState.FAILED]
    code, out = run_on_terminal(["--url", url, "jobs", "purge", "--yes"], cli_env())
    assert code == 0, out
    assert "deleting failed jobs" in out and f"{failed}/{failed}" in out
    assert f"deleted {failed} failed jobs" in out


def test_purge_deletes_more_finished_jobs_than_one_batch(url: str) -> None:
    seed(url, 1203, other=7)
    out = run(url, "jobs", "purge", "--yes", "--queue", "default")
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "deleted 1203 failed jobs of queue default"
    assert counts(url, "default").get(JobState.FAILED, 0) == 0
    assert counts(url, "other")[JobState.FAILED] == 7


def test_purge_older_than_deletes_only_jobs_finished_before_the_cut(url: str) -> None:
    async def go() -> None:
        async with Queue.from_url(url) as q:
            await fail_jobs(q, 30, name="old", at=time.time() - 8 * 86400)
            await fail_jobs(q, 20, name="new")

    asyncio.run(go())
    out = run(url, "jobs", "purge", "--yes", "--older-than", "7d", "--batch-size", "7", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["deleted"] == 30
    assert counts(url)[JobState.FAILED] == 20


def interrupt_after_a_batch(path: Path, args: list[str], done: str) -> tuple[int, str, int]:
    """Run the command; once ``done`` (a query of how many jobs it changed) is above 0, hold
    SQLite's write lock so that its next batch waits, Ctrl-C it, then let go: the batch in
    hand is finished and the command stops. Its exit code, stdout, and ``done`` at the
    Ctrl-C."""
    proc = start(args, cli_env())
    lock = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        deadline = time.monotonic() + 30
        while lock.execute(done).fetchone()[0] == 0:  # a cheap look, to be in time
            assert time.monotonic() < deadline, "no batch was done"
            assert proc.poll() is None, proc.communicate()
        lock.execute("BEGIN IMMEDIATE")  # the next batch waits for this
        done_then = int(lock.execute(done).fetchone()[0])
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        assert "stopping after this batch" in proc.stderr.readline()
        lock.execute("ROLLBACK")
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        lock.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    return proc.returncode, stdout, done_then


def test_ctrl_c_stops_retrying_between_batches_and_says_how_many(tmp_path: Path) -> None:
    path = tmp_path / "retry.db"
    url = f"sqlite:///{path}"
    seed(url, 2000)
    args = ["--url", url, "jobs", "retry", "--all-failed", "--batch-size", "20"]
    queued = "SELECT count(*) FROM conveyor_job WHERE state = 'queued'"
    _, stdout, queued_then = interrupt_after_a_batch(path, args, queued)
    assert queued_then < 2000, "the command finished before it could be interrupted"
    match = re.fullmatch(
        r"retried (\d+) failed job\(s\); stopped by Ctrl-C: the rest stay failed\n", stdout
    )
    assert match, stdout
    retried = int(match[1])
    after = counts(url)
    assert (after[JobState.QUEUED], after[JobState.FAILED]) == (retried, 2000 - retried)
    assert retried % 20 == 0 and queued_then <= retried < 2000


def test_ctrl_c_stops_a_purge_between_batches(tmp_path: Path) -> None:
    path = tmp_path / "purge.db"
    url = f"sqlite:///{path}"
    seed(url, 2000)
    args = ["--url", url, "jobs", "purge", "--yes", "--batch-size", "20"]
    gone = "SELECT 2000 - count(*) FROM conveyor_job"
    _, stdout, gone_then = interrupt_after_a_batch(path, args, gone)
    assert gone_then < 2000, "the command finished before it could be interrupted"
    match = re.fullmatch(r"deleted (\d+) failed jobs; stopped by Ctrl-C: the rest stay\n", stdout)
    assert match, stdout
    deleted = int(match[1])
    assert counts(url)[JobState.FAILED] == 2000 - deleted
    assert deleted % 20 == 0 and gone_then <= deleted < 2000
