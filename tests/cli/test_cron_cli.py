"""``conveyor cron ls`` over a real SQLite file: schedules as workers declared them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from conveyor import Queue
from conveyor.cli import cli
from conveyor.core.schedule import tick_job_id
from conveyor.drivers.records import CronFire, CronSchedule, NewJob

TICK = int(datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args], catch_exceptions=False)


def seed(url: str) -> None:
    async def go() -> None:
        async with Queue.from_url(url) as q:
            await q.driver.cron_register(
                [
                    CronSchedule(
                        "sessions.cleanup",
                        "default",
                        "sessions.cleanup",
                        "30 1 * * *",
                        "Europe/London",
                        overlap="skip",
                    ),
                    CronSchedule("inventory.sync", "stock", "inventory.sync", "@every 300s"),
                ]
            )
            job = NewJob(
                tick_job_id("sessions.cleanup", TICK), "default", "sessions.cleanup", b"{}"
            )
            await q.driver.cron_fire(CronFire("sessions.cleanup", TICK, job), now=TICK + 1)

    asyncio.run(go())


def test_cron_ls_shows_each_schedule_with_its_last_and_next_fire_time(url: str) -> None:
    seed(url)
    out = run(url, "cron", "ls")
    assert out.exit_code == 0, out.output
    header, _, *rows = out.output.splitlines()
    assert header.split() == [
        "schedule", "job", "queue", "when", "catch_up", "overlap", "last", "next"
    ]  # fmt: skip
    assert [row.split()[0] for row in rows] == ["inventory.sync", "sessions.cleanup"]
    assert "every 5m" in rows[0] and rows[0].split()[-3] == "-"  # never fired yet
    assert "30 1 * * * (Europe/London)" in rows[1] and "(fired)" in rows[1] and "skip" in rows[1]

    (sync, nightly) = json.loads(run(url, "cron", "ls", "--json").output)
    assert nightly["last_tick"] == "2026-10-25T00:30:00+00:00"
    assert nightly["last_status"] == "fired" and nightly["tz"] == "Europe/London"
    next_tick = datetime.fromisoformat(nightly["next_tick"])
    assert next_tick > datetime.now(UTC)
    assert next_tick.astimezone(ZoneInfo("Europe/London")).strftime("%H:%M") in ("01:30", "02:00")
    assert sync["last_tick"] is None and sync["queue"] == "stock"
    assert datetime.fromisoformat(sync["next_tick"]).timestamp() % 300 == 0


def test_cron_ls_with_no_schedules_prints_the_header(url: str) -> None:
    asyncio.run(Queue.from_url(url).connect())
    out = run(url, "cron", "ls")
    assert out.exit_code == 0 and out.output.startswith("schedule")


def test_cron_ls_from_the_wrong_place_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, ["cron", "ls"])
    assert out.exit_code == 1
    assert "no SQLite database" in out.output
    assert list(tmp_path.iterdir()) == []
