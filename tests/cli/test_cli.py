"""The inspection and repair commands, over a real SQLite file, through click's runner."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydantic import BaseModel

from conveyor import FakeClock, JobDef, JobState, Queue, Rate, Worker, job
from conveyor.cli import cli
from conveyor.drivers.records import FetchParams, FinishJob, Retention, TransitionKind


class Ping(BaseModel):
    n: int


ping = job("test.ping", Ping, result=int)
pong = job("test.pong", Ping, queue="other")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(url: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args], input=input, catch_exceptions=False)


def seed(url: str) -> dict[str, str]:
    """Three jobs: one failed with an error, one queued, one on another queue."""

    async def go() -> dict[str, str]:
        async with Queue.from_url(url) as q:
            await q.enqueue(ping, Ping(n=1), job_id="will-fail", attempts=1)
            await q.enqueue(ping, Ping(n=2), job_id="waiting")
            await q.enqueue(pong, Ping(n=3), job_id="elsewhere")
            (leased,) = await q.driver.job_fetch(FetchParams(("default",), 1, "w", 30.0))
            assert leased.id == "will-fail" and leased.lease_token
            await q.driver.job_finish_many(
                [
                    FinishJob(
                        leased.id,
                        leased.lease_token,
                        TransitionKind.FAIL,
                        error="ValueError: boom\nTraceback: line 1",
                    )
                ],
                retention=Retention(),
            )
            return {"failed": "will-fail", "queued": "waiting"}

    return asyncio.run(go())


def state_of(url: str, job_id: str) -> JobState:
    async def go() -> JobState:
        async with Queue.from_url(url) as q:
            info = await q.get(job_id)
            assert info is not None
            return info.state

    return asyncio.run(go())


def test_jobs_ls_filters_by_state_and_prints_json(url: str) -> None:
    seed(url)
    out = run(url, "jobs", "ls", "--state", "failed")
    assert out.exit_code == 0
    assert "will-fail" in out.output and "ValueError: boom" in out.output
    assert "waiting" not in out.output

    data = json.loads(run(url, "jobs", "ls", "--json").output)
    assert [d["id"] for d in data] == ["elsewhere", "waiting", "will-fail"]  # newest first


def test_made_ids_never_read_as_options_and_an_own_one_that_would_goes_after_dashes(
    url: str,
) -> None:
    """One made id in 64 would begin with "-" (URL-safe base64); none does. An id of one's own
    that does is shown after "--"."""

    async def go() -> list[str]:
        async with Queue.from_url(url) as q:
            await q.enqueue(ping, Ping(n=1), job_id="-own")
            handles = await q.enqueue_many([ping.request(Ping(n=n)) for n in range(2000)])
            return [h.id for h in handles]

    made = asyncio.run(go())
    assert not [job_id for job_id in made if job_id.startswith("-")]
    out = run(url, "jobs", "show", made[0])
    assert out.exit_code == 0 and made[0] in out.output
    own = run(url, "jobs", "show", "--", "-own")
    assert own.exit_code == 0 and "-own" in own.output


def test_jobs_ls_paginates_with_before(url: str) -> None:
    seed(url)
    first = json.loads(run(url, "jobs", "ls", "--json", "--limit", "2").output)
    assert len(first) == 2
    rest = json.loads(run(url, "jobs", "ls", "--json", "--before", str(first[-1]["seq"])).output)
    assert [d["id"] for d in first + rest] == ["elsewhere", "waiting", "will-fail"]


def test_jobs_show_prints_payload_and_traceback(url: str) -> None:
    seed(url)
    out = run(url, "jobs", "show", "will-fail")
    assert out.exit_code == 0
    assert "failed" in out.output and "Traceback: line 1" in out.output
    assert "'n': 1" in out.output

    missing = run(url, "jobs", "show", "nope")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_jobs_retry_moves_failed_back_to_queued(url: str) -> None:
    seed(url)
    out = run(url, "jobs", "retry", "will-fail")
    assert out.exit_code == 0, out.output
    assert state_of(url, "will-fail") is JobState.QUEUED

    wrong = run(url, "jobs", "retry", "waiting")
    assert wrong.exit_code == 1 and "wrong_state" in wrong.output


def test_jobs_retry_all_failed(url: str) -> None:
    seed(url)
    out = run(url, "jobs", "retry", "--all-failed")
    assert out.exit_code == 0, out.output
    assert state_of(url, "will-fail") is JobState.QUEUED


def test_jobs_cancel(url: str) -> None:
    seed(url)
    assert run(url, "jobs", "cancel", "waiting").exit_code == 0
    assert state_of(url, "waiting") is JobState.CANCELLED
    assert run(url, "jobs", "cancel", "nope").exit_code == 1


def test_jobs_purge_deletes_failed_after_confirmation(url: str) -> None:
    seed(url)
    declined = run(url, "jobs", "purge", input="n\n")
    assert declined.exit_code != 0
    assert state_of(url, "will-fail") is JobState.FAILED

    out = run(url, "jobs", "purge", "--yes")
    assert out.exit_code == 0 and "deleted 1" in out.output
    assert "will-fail" not in run(url, "jobs", "ls").output


def test_jobs_purge_older_than_keeps_recent(url: str) -> None:
    seed(url)
    out = run(url, "jobs", "purge", "--yes", "--older-than", "7d")
    assert out.exit_code == 0, out.output
    assert "deleted 0" in out.output
    assert state_of(url, "will-fail") is JobState.FAILED  # finished just now: kept
    bad = run(url, "jobs", "purge", "--yes", "--older-than", "soon")
    assert bad.exit_code != 0 and "invalid duration" in bad.output


def test_queues_ls_pause_resume(url: str) -> None:
    seed(url)
    listing = run(url, "queues", "ls").output
    assert "default" in listing and "other" in listing

    assert run(url, "queues", "pause", "other").exit_code == 0
    paused_line = next(
        line for line in run(url, "queues", "ls").output.splitlines() if line.startswith("other")
    )
    assert "paused" in paused_line

    assert run(url, "queues", "resume", "other").exit_code == 0
    line = next(
        line for line in run(url, "queues", "ls").output.splitlines() if line.startswith("other")
    )
    assert "running" in line


def test_workers_lists_live_heartbeats(url: str) -> None:
    from conveyor.drivers.records import WorkerInfo

    async def beat() -> None:
        async with Queue.from_url(url, clock=FakeClock()) as q:
            info = WorkerInfo("host:1:abc", "host", 1, ("default",), 5, 0.0)
            await q.driver.worker_heartbeat(info, ttl=60)

    asyncio.run(beat())
    assert "host:1:abc" in run(url, "workers").output


def test_unknown_scheme_is_a_clear_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["--url", "ftp://x", "queues", "ls"])
    assert out.exit_code == 1
    assert "Error: unsupported backend URL 'ftp://x'" in out.output


def test_migrate_creates_the_schema_then_reports_up_to_date(url: str) -> None:
    first = run(url, "migrate")
    assert (
        first.exit_code == 0
        and "applied: 0001_initial, 0002_history_routes_listing" in first.output
    )
    again = run(url, "migrate")
    assert again.exit_code == 0 and "up to date" in again.output


def test_an_in_process_backend_is_refused_by_the_command_line() -> None:
    out = CliRunner().invoke(cli, ["--url", "memory://x", "queues", "ls"])
    assert out.exit_code == 1
    assert "Error: memory://x cannot be used from the command line" in out.output


def test_a_worker_process_refuses_an_in_process_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "memworker.py").write_text(
        "from conveyor import Queue, Worker\nworker = Worker(Queue.from_url('memory://mw'))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = CliRunner().invoke(cli, ["worker", "memworker:worker"])
    assert out.exit_code == 1
    assert "memory://mw cannot be used by a worker process" in out.output


@pytest.mark.parametrize(
    "command",
    [
        ["queues", "ls"],
        ["jobs", "ls"],
        ["jobs", "show", "x"],
        ["jobs", "retry", "x"],
        ["jobs", "cancel", "x"],
        ["jobs", "purge", "--yes"],
        ["queues", "pause", "q"],
        ["workers"],
    ],
)
def test_commands_run_from_the_wrong_place_refuse_instead_of_creating_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """Before: `conveyor queues ls` from the wrong directory made an empty conveyor.db there and
    exited 0, listing nothing."""
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, command)
    assert out.exit_code == 1, out.output
    assert f"Error: no SQLite database at {tmp_path / 'conveyor.db'}" in out.output
    assert list(tmp_path.iterdir()) == []


def test_queues_ls_shows_the_workers_serving_each_queue_and_warns_of_none(url: str) -> None:
    from conveyor.drivers.records import WorkerInfo

    seed(url)

    async def beat() -> None:
        async with Queue.from_url(url) as q:
            info = WorkerInfo("host:1:abc", "host", 1, ("default",), 5, 0.0)
            await q.driver.worker_heartbeat(info, ttl=60)

    asyncio.run(beat())
    out = CliRunner().invoke(cli, ["--url", url, "queues", "ls"])
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()[2:]}
    assert lines["default"][2] == "1" and lines["other"][2] == "0"
    assert "warning: queue other has 1 job(s) waiting and no live worker" in out.stderr


def test_jobs_show_tells_the_attempt_of_the_last_error_and_the_history(url: str) -> None:
    ids = seed(url)
    run(url, "jobs", "retry", ids["failed"])

    async def complete() -> None:
        async with Queue.from_url(url) as q:
            fetched = await q.driver.job_fetch(FetchParams(("default",), 2, "w", 30.0))
            [leased] = [job for job in fetched if job.id == ids["failed"]]
            assert leased.lease_token
            finish = FinishJob(leased.id, leased.lease_token, TransitionKind.COMPLETE, b"2")
            await q.driver.job_finish_many([finish], retention=Retention())

    before = run(url, "jobs", "show", ids["failed"]).output
    assert "last error (attempt 1):" in before and "ValueError: boom" in before
    asyncio.run(complete())
    after = run(url, "jobs", "show", ids["failed"]).output
    assert "completed" in after and "last error" not in after  # it belonged to attempt 1
    assert "attempt 1 at " in after and "ValueError: boom" in after  # kept in the history
    data = json.loads(run(url, "jobs", "show", "--json", ids["failed"]).output)
    assert (data["error"], [e["attempt"] for e in data["errors"]]) == (None, [1])


def test_jobs_show_says_a_cancel_is_pending_on_a_running_job(url: str) -> None:
    ids = seed(url)

    async def lease() -> None:
        async with Queue.from_url(url) as q:
            await q.driver.job_fetch(FetchParams(("default",), 1, "w", 30.0))

    asyncio.run(lease())
    assert run(url, "jobs", "cancel", ids["queued"]).exit_code == 0
    out = run(url, "jobs", "show", ids["queued"]).output
    assert "active (cancel requested: its worker is stopping it)" in out


rated = job("test.rated", Ping, queue="rated", rate_limit=Rate(5, per=2))
crowding = job("test.crowding", Ping, queue="rated")


def _serving(*definitions: JobDef[Ping, object]) -> Worker:
    worker = Worker(Queue.from_url("memory://"), jobs=list(definitions))
    for definition in definitions:
        worker.register(definition, lambda payload, ctx: None)
    return worker


def test_check_shows_rate_limits_and_refuses_a_shared_rate_limited_queue(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    app = types.ModuleType("rate_app")
    app.good = _serving(rated, ping)  # type: ignore[attr-defined]
    app.bad = _serving(rated, crowding)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rate_app", app)
    good = run(url, "check", "rate_app:good")
    assert good.exit_code == 0, good.output
    assert "test.rated  (queue rated, rate limit 5 per 2s)" in good.output
    bad = CliRunner().invoke(cli, ["--url", url, "check", "rate_app:bad"])
    assert bad.exit_code != 0
    assert "shares queue 'rated' with job 'test.crowding'" in bad.output
