"""``conveyor jobs retry --all-failed``: pages of failed jobs retried batch by batch, over more
jobs than one batch, bounded by --limit, filtered by queue and name, and stopped between two
batches by Ctrl-C with every job either retried or still failed."""

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
    assert "retried 600 failed job(s)" in out


def test_ctrl_c_stops_between_batches_and_says_how_many(tmp_path: Path) -> None:
    """The test holds SQLite's write lock once the first batch is in, so the command waits in
    a later batch; Ctrl-C then, and the lock let go: the batch in hand is finished and the
    command stops, reporting exactly what the store shows."""
    path = tmp_path / "retry.db"
    url = f"sqlite:///{path}"
    seed(url, 2000)
    proc = start(["--url", url, "jobs", "retry", "--all-failed", "--batch-size", "20"], cli_env())
    lock = sqlite3.connect(path, timeout=30, isolation_level=None)
    queued = "SELECT count(*) FROM conveyor_job WHERE state = 'queued'"
    try:
        deadline = time.monotonic() + 30
        while lock.execute(queued).fetchone()[0] == 0:  # a cheap look, to be in time
            assert time.monotonic() < deadline, "no batch was retried"
            assert proc.poll() is None, proc.communicate()
        lock.execute("BEGIN IMMEDIATE")  # the next batch waits for this
        queued_then = lock.execute(queued).fetchone()[0]
        assert queued_then < 2000, "the command finished before it could be interrupted"
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
    match = re.fullmatch(
        r"retried (\d+) failed job\(s\); stopped by Ctrl-C: the rest stay failed\n", stdout
    )
    assert match, stdout
    retried = int(match[1])
    after = counts(url)
    assert (after[JobState.QUEUED], after[JobState.FAILED]) == (retried, 2000 - retried)
    assert retried % 20 == 0 and queued_then <= retried < 2000
