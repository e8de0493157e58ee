"""``--json`` on every inspection and repair command, and tables: plain columns when piped, a
rich table on a terminal, plain again on a terminal without rich. Over real stores: SQLite
files, and the Redis and PostgreSQL servers of tests/conftest.py."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydantic import BaseModel, SecretStr

from conveyor import Queue, job
from conveyor.cli import cli
from conveyor.cli._common import job_as_dict
from tests.cli._helpers import Ping, cli_env, fail_jobs, heartbeat, ping, pong, run_on_terminal
from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url

ALL_STATES = {"scheduled", "queued", "active", "retrying", "completed", "failed", "cancelled"}


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return redis_test_url(request.getfixturevalue("redis_base_url"))
    if request.param == "postgres":
        url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
        request.addfinalizer(lambda: drop_test_schema(url))
        return url
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(url: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args], input=input, catch_exceptions=False)


def seed(url: str) -> None:
    """Two failed jobs and one queued on `default` (served by a live worker), one queued on
    `other` (served by none)."""

    async def go() -> None:
        async with Queue.from_url(url) as q:
            await fail_jobs(q, 2, name="failed")
            await q.enqueue(ping, Ping(n=1), job_id="waiting")
            await q.enqueue(pong, Ping(n=2), job_id="elsewhere")
            await heartbeat(q, "default")

    asyncio.run(go())


def is_iso(text: str) -> bool:
    return datetime.fromisoformat(text).tzinfo is not None


def test_queues_ls_json(url: str) -> None:
    seed(url)
    out = run(url, "queues", "ls", "--json")
    assert out.exit_code == 0, out.output
    data = {q["name"]: q for q in json.loads(out.stdout)}
    assert set(data["default"]) == {"name", "paused", "workers", "counts", "waiting", "unserved"}
    assert set(data["default"]["counts"]) == ALL_STATES
    assert data["default"]["counts"]["failed"] == 2 and data["default"]["counts"]["queued"] == 1
    assert (data["default"]["workers"], data["default"]["unserved"]) == (1, False)
    assert (data["other"]["workers"], data["other"]["waiting"], data["other"]["unserved"]) == (
        0,
        1,
        True,
    )
    run(url, "queues", "pause", "other")
    paused = {q["name"]: q for q in json.loads(run(url, "queues", "ls", "--json").stdout)}
    assert paused["other"]["paused"] is True and paused["other"]["unserved"] is False


def test_workers_json(url: str) -> None:
    seed(url)
    [worker] = json.loads(run(url, "workers", "--json").stdout)
    assert set(worker) == {
        "id",
        "hostname",
        "pid",
        "queues",
        "concurrency",
        "running",
        "processed",
        "started_at",
        "last_seen_at",
    }
    assert worker["id"] == "host:1:abc" and worker["queues"] == ["default"]
    assert is_iso(worker["started_at"])
    assert worker["last_seen_at"] is None or is_iso(worker["last_seen_at"])


def test_retry_and_cancel_report_as_json_and_keep_their_exit_codes(url: str) -> None:
    seed(url)
    out = run(url, "jobs", "retry", "--json", "failed-0", "nope")
    assert out.exit_code == 1  # one job could not be retried, as without --json
    report = json.loads(out.stdout)
    assert report["action"] == "retry" and (report["changed"], report["unchanged"]) == (1, 1)
    assert report["results"][0] == {
        "id": "failed-0",
        "status": "ok",
        "state": report["results"][0]["state"],
    }
    assert report["results"][1] == {"id": "nope", "status": "not_found", "state": None}

    out = run(url, "jobs", "cancel", "--json", "waiting", "failed-1")
    assert out.exit_code == 1
    report = json.loads(out.stdout)
    assert report["action"] == "cancel" and (report["changed"], report["unchanged"]) == (1, 1)
    assert report["results"][1] == {"id": "failed-1", "status": "wrong_state", "state": "failed"}

    ok = run(url, "jobs", "cancel", "--json", "elsewhere")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["changed"] == 1


def test_retry_all_failed_reports_as_json(url: str) -> None:
    seed(url)
    out = run(url, "jobs", "retry", "--all-failed", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert (report["changed"], report["interrupted"], report["limit_reached"]) == (2, False, False)
    assert sorted(r["id"] for r in report["results"]) == ["failed-0", "failed-1"]


def test_purge_reports_as_json_with_the_question_on_stderr(url: str) -> None:
    seed(url)
    declined = CliRunner().invoke(cli, ["--url", url, "jobs", "purge", "--json"], input="n\n")
    assert declined.exit_code == 1 and declined.stdout == ""
    assert "Delete all failed jobs?" in declined.stderr

    out = run(url, "jobs", "purge", "--json", "--yes", "--queue", "default")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {
        "action": "purge",
        "deleted": 2,
        "states": ["failed"],
        "queue": "default",
        "older_than_seconds": None,
        "interrupted": False,
    }
    aged = json.loads(run(url, "jobs", "purge", "--json", "--yes", "--older-than", "7d").stdout)
    assert (aged["deleted"], aged["older_than_seconds"]) == (0, 7 * 86400)


def test_cron_ls_json_is_a_list(sqlite_url: str) -> None:
    seed(sqlite_url)
    assert json.loads(run(sqlite_url, "cron", "ls", "--json").stdout) == []


def test_piped_tables_are_plain_columns_without_escape_codes(sqlite_url: str) -> None:
    seed(sqlite_url)
    for command in (["jobs", "ls"], ["queues", "ls"], ["workers"], ["cron", "ls"]):
        out = run(sqlite_url, *command)
        assert out.exit_code == 0, out.output
        assert "\x1b" not in out.output
        header, dashes, *_ = out.stdout.splitlines()
        assert set(dashes.replace(" ", "")) == {"-"}, command
        assert len(header.split()) == len(dashes.split())
    rows = run(sqlite_url, "jobs", "ls").stdout.splitlines()[2:]
    assert {row.split()[1]: row.split()[4] for row in rows} == {
        "elsewhere": "queued",
        "waiting": "queued",
        "failed-1": "failed",
        "failed-0": "failed",
    }


def test_on_a_terminal_tables_are_drawn_by_rich_in_colour(sqlite_url: str) -> None:
    seed(sqlite_url)
    code, out = run_on_terminal(["--url", sqlite_url, "jobs", "ls"], cli_env())
    assert code == 0, out
    assert "\x1b[" in out  # coloured states
    assert "━" in out or "─" in out  # rich's rule under the header, not dashes
    assert "failed-0" in out and "test.ping" in out
    code, out = run_on_terminal(["--url", sqlite_url, "queues", "ls"], cli_env())
    assert code == 0 and "other" in out and "no live worker" in out


def test_on_a_terminal_without_rich_tables_are_plain(sqlite_url: str, tmp_path: Path) -> None:
    seed(sqlite_url)
    blocker = tmp_path / "no_rich" / "rich"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    env = cli_env(PYTHONPATH=str(blocker.parent))
    code, out = run_on_terminal(["--url", sqlite_url, "queues", "ls"], env)
    assert code == 0, out
    lines = out.replace("\r", "").splitlines()
    assert lines[0].split()[:3] == ["queue", "status", "workers"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "\x1b" not in out
    code, out = run_on_terminal(["--url", sqlite_url, "jobs", "retry", "--all-failed"], env)
    assert code == 0 and "retried 2 failed job(s)" in out


class Card(BaseModel):
    holder: str
    cvv: SecretStr


card = job("test.card", Card)


async def test_json_payloads_show_secret_fields_redacted() -> None:
    """What ``jobs ls --json`` and ``jobs show`` print of a job is built by ``job_as_dict``:
    secret fields are asterisks there, on the reference driver (which keeps headers)."""
    async with Queue.from_url("memory://cli-secrets") as q:
        handle = await q.enqueue(card, Card(holder="Ada", cvv=SecretStr("cvv-never-shown")))
        info = await q.get(handle.id)
    assert info is not None
    data = job_as_dict(info)
    assert data["payload"] == {"holder": "Ada", "cvv": "**********"}
    assert "cvv-never-shown" not in json.dumps(data)
    assert "conveyor-secrets" in data["headers"]
