"""``conveyor top``: one frame with --once (plain and JSON), and the live view in a real process
whose rates follow the jobs that fail while it watches."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from conveyor import Queue, Worker, WorkerConfig
from conveyor.cli import cli
from conveyor.cli.top import take_frame
from conveyor.drivers.records import QueueStats
from tests.cli._helpers import (
    Ping,
    cli_env,
    fail_jobs,
    heartbeat,
    ping,
    pong,
    run_on_terminal,
    start,
)
from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url
from tests.servers.redis_server import RedisServer


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return redis_test_url(request.getfixturevalue("redis_base_url"))
    if request.param == "postgres":
        url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
        request.addfinalizer(lambda: drop_test_schema(url))
        return url
    return f"sqlite:///{tmp_path / 'top.db'}"


def seed(url: str) -> None:
    async def go() -> None:
        async with Queue.from_url(url) as q:
            await fail_jobs(q, 3)
            await q.enqueue(ping, Ping(n=1), job_id="waiting")
            await q.enqueue(pong, Ping(n=2), job_id="elsewhere")
            await q.enqueue(pong, Ping(n=3), job_id="later", delay=3600)
            await heartbeat(q, "default")

    asyncio.run(go())


def test_top_once_json_gives_the_numbers(url: str) -> None:
    seed(url)
    out = CliRunner().invoke(cli, ["--url", url, "top", "--once", "--json"])
    assert out.exit_code == 0, out.output
    frame = json.loads(out.stdout)
    assert set(frame) == {"at", "interval", "workers", "queues"}
    assert frame["workers"] == 1
    queues = {q["name"]: q for q in frame["queues"]}
    default, other = queues["default"], queues["other"]
    assert (default["counts"]["failed"], default["counts"]["queued"], default["workers"]) == (
        3,
        1,
        1,
    )
    assert (other["counts"]["queued"], other["counts"]["scheduled"]) == (1, 1)
    assert (other["waiting"], other["unserved"], default["unserved"]) == (2, True, False)
    # failed by the test through the driver, not by a worker: nobody counted them
    assert (default["completed_per_minute"], default["failed_per_minute"]) == (0.0, 0.0)


def test_top_once_shows_the_rates_a_worker_counted(url: str) -> None:
    seed(url)
    fail_in_a_worker(url, 4)  # and the job waiting on `default`: 5 failed
    frame = json.loads(CliRunner().invoke(cli, ["--url", url, "top", "--once", "--json"]).stdout)
    default = next(q for q in frame["queues"] if q["name"] == "default")
    assert default["failed_per_minute"] == pytest.approx(5, abs=0.5)  # both in the last 60 s
    assert default["completed_per_minute"] == 0.0


def test_top_once_prints_one_plain_frame_when_piped(url: str) -> None:
    seed(url)
    out = CliRunner().invoke(cli, ["--url", url, "top", "--once"])
    assert out.exit_code == 0, out.output
    assert "\x1b" not in out.stdout
    title, header, _dashes, *rest = out.stdout.splitlines()
    assert title.startswith("conveyor top") and "1 live worker(s)" in title
    assert header.split()[:3] == ["queue", "status", "workers"]
    rows = {line.split()[0]: line.split() for line in rest if not line.startswith("!")}
    assert len(rows["other"]) == len(header.split()) + 1  # marked: jobs wait, no live worker
    assert rows["other"][-1] == "!" and len(rows["default"]) == len(header.split())
    assert "! queue other has 2 job(s) waiting and no live worker" in out.stdout


def test_top_marks_paused_queues_and_says_when_there_are_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert CliRunner().invoke(cli, ["--url", url, "migrate"]).exit_code == 0
    empty = CliRunner().invoke(cli, ["--url", url, "top", "--once"])
    assert empty.exit_code == 0 and "no queues yet" in empty.stdout
    seed(url)
    CliRunner().invoke(cli, ["--url", url, "queues", "pause", "other"])
    out = CliRunner().invoke(cli, ["--url", url, "top", "--once"]).stdout
    [line] = [line for line in out.splitlines() if " other " in f" {line} "]
    assert "paused" in line and not line.endswith("!")  # a paused queue is not unserved


def test_top_once_on_a_terminal_draws_a_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'top.db'}"
    seed(url)
    code, out = run_on_terminal(["--url", url, "top", "--once"], cli_env())
    assert code == 0, out
    assert "\x1b[" in out and "conveyor top" in out and "done/min" in out


def fail_in_a_worker(url: str, count: int) -> None:
    """``count`` jobs that a real burst worker runs and fails for good (it also runs what else
    waits on `default`, and fails it)."""

    def boom(payload: Ping, ctx: object) -> None:
        raise ValueError("boom")

    async def go() -> None:
        queue = Queue.from_url(url)
        async with queue:
            await queue.enqueue_many([ping.request(Ping(n=i), attempts=1) for i in range(count)])
            worker = Worker(queue, jobs=[ping], queues=["default"], config=WorkerConfig(burst=True))
            worker.register(ping, boom)
            await worker.run()

    asyncio.run(go())


def test_top_watches_and_counts_failures_per_minute_until_ctrl_c(url: str) -> None:
    """The live view, piped with --json: one line per refresh; jobs a worker fails while it
    watches show as a rate (from the per-minute counts the worker writes); Ctrl-C ends it with
    exit 0."""
    seed(url)
    proc = start(["--url", url, "top", "--json", "--interval", "0.3"], cli_env())
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["interval"] == 0.3
        fail_in_a_worker(url, 5)
        deadline = time.monotonic() + 30
        seen: list[float | None] = []
        while time.monotonic() < deadline:
            frame = json.loads(proc.stdout.readline())
            default = next(q for q in frame["queues"] if q["name"] == "default")
            seen.append(default["failed_per_minute"])
            if default["counts"]["failed"] == 9 and any(seen):
                break
        else:
            raise AssertionError(f"no failure rate seen: {seen}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_the_live_view_survives_its_backend_going_away() -> None:
    """A private Redis stopped under it: each refresh says it failed (on stderr) and the view
    goes on; once the server is back, frames follow again; Ctrl-C still ends it with 0."""
    with RedisServer(appendonly=True) as server:  # its jobs are there again after a restart
        url = redis_test_url(server.url)
        seed(url)
        proc = start(["--url", url, "top", "--json", "--interval", "0.2"], cli_env())
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert json.loads(proc.stdout.readline())["workers"] == 1
            server.stop()
            assert "refresh failed, retrying:" in proc.stderr.readline()
            assert proc.poll() is None
            server.start()
            back = datetime.now(UTC)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # frames from before the stop, then new ones
                frame = json.loads(proc.stdout.readline())
                if datetime.fromisoformat(frame["at"]) > back:
                    break
            else:
                raise AssertionError("no frame after the server came back")
            assert frame["workers"] == 1
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_top_says_what_is_wrong_with_its_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'top.db'}"
    bad = CliRunner().invoke(cli, ["--url", url, "top", "--interval", "0"])
    assert bad.exit_code == 2 and "--interval" in bad.output
    missing = CliRunner().invoke(cli, ["--url", url, "top", "--once"])
    assert missing.exit_code == 1 and "no SQLite database" in missing.output


def test_piped_live_view_prints_frames_one_after_another(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'top.db'}"
    seed(url)
    proc = start(["--url", url, "top", "--interval", "0.2"], cli_env())
    try:
        assert proc.stdout is not None
        titles = 0
        while titles < 2:
            line = proc.stdout.readline()
            assert line, "top ended early"
            titles += line.startswith("conveyor top")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def test_rates_are_the_per_minute_counts_of_the_last_60_seconds() -> None:
    """The current minute whole and the previous one's share of the last 60 seconds; queues
    without counts show 0. On the reference driver (the command line refuses it, so the frame
    is taken directly)."""
    async with Queue.from_url("memory://top-stats") as q:
        await q.enqueue(ping, Ping(n=1))
        await q.enqueue(pong, Ping(n=2))
        now = time.time()
        minute = int(now // 60)
        share = 1 - (now % 60) / 60
        await q.driver.stats_add(
            [
                QueueStats("default", minute - 1, completed=60, failed=6),
                QueueStats("default", minute, completed=10, retried=3, failed=1),
                QueueStats("default", minute - 2, completed=1000),  # over a minute ago
            ]
        )
        frame = await take_frame(q)
    rates = {i["name"]: (i["completed_per_minute"], i["failed_per_minute"]) for i in frame.queues}
    completed, failed = rates["default"]
    assert completed == pytest.approx(10 + 60 * share, abs=1.5)  # moments apart, rounded
    assert failed == pytest.approx(1 + 6 * share, abs=0.2)
    assert rates["other"] == (0.0, 0.0)
