"""``conveyor jobs show`` prints a job's progress, when its own retention deletes it, and its
group."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result
from pydantic import BaseModel

from conveyor import Queue, job
from conveyor.cli import cli
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    ProgressUpdate,
    Retention,
    TransitionKind,
)

T0 = 1_700_000_000.0


class Ping(BaseModel):
    n: int


ping = job("test.ping", Ping, result=int, keep_completed=3600)


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args], catch_exceptions=False)


def test_jobs_show_prints_progress_and_expiry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def seed() -> None:
        async with Queue.from_url(url) as q:
            await q.enqueue(ping, Ping(n=1), job_id="p")
            await q.enqueue(ping, Ping(n=2), job_id="quiet")
            leased = await q.driver.job_fetch(FetchParams(("default",), 2, "w", 30.0), now=T0)
            token = {j.id: j.lease_token or "" for j in leased}
            update = ProgressUpdate("p", token["p"], 0.42, "resizing images")
            await q.driver.job_progress_many([update], now=T0 + 1)
            finish = FinishJob("p", token["p"], TransitionKind.COMPLETE, result=b"1")
            await q.driver.job_finish_many([finish], retention=Retention(), now=T0 + 2)

    asyncio.run(seed())
    out = run(url, "jobs", "show", "p").output
    assert "progress: 42% resizing images (at 2023-11-14T22:13:21+00:00)" in out
    assert "expires_at: 2023-11-14T23:13:22+00:00" in out
    quiet = run(url, "jobs", "show", "quiet").output
    assert "progress" not in quiet and "expires_at" not in quiet
    data = json.loads(run(url, "jobs", "show", "--json", "p").output)
    assert (data["progress"], data["progress_message"]) == (0.42, "resizing images")
    assert data["expires_at"] == "2023-11-14T23:13:22+00:00"


class Delivery(BaseModel):
    account: str


deliver = job("test.deliver", Delivery, group_key=lambda p: p.account, group_concurrency=1)


def test_jobs_show_prints_the_group(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def seed() -> None:
        async with Queue.from_url(url) as q:
            await q.enqueue(deliver, Delivery(account="acct-7"), job_id="d")
            await q.enqueue(ping, Ping(n=3), job_id="plain")

    asyncio.run(seed())
    assert "group: test.deliver:acct-7" in run(url, "jobs", "show", "d").output
    assert json.loads(run(url, "jobs", "show", "--json", "d").output)["group"] == (
        "test.deliver:acct-7"
    )
    assert "group" not in run(url, "jobs", "show", "plain").output
