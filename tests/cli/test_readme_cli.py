"""The README's command-line section runs as written, in real processes, against a SQLite file
with a failed job on `emails`; its table of `--json` keys is what the commands print."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from conveyor import Queue, job
from conveyor.cli import cli
from tests.cli._helpers import Ping, cli_env
from tests.test_readme import README

BIN = Path(sys.executable).parent
SECTION = README.read_text().split("### 5. Inspect and repair", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```bash\n(.*?)```", SECTION, re.S)

email = job("test.email", Ping, queue="emails")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'readme.db'}"

    async def seed() -> None:
        from conveyor.drivers.records import FetchParams, FinishJob, Retention, TransitionKind

        async with Queue.from_url(url) as q:
            await q.enqueue(email, Ping(n=1), job_id="job-1", attempts=1)
            await q.enqueue(email, Ping(n=2), job_id="job-2", attempts=1)
            for leased in await q.driver.job_fetch(FetchParams(("emails",), 2, "w", 30.0)):
                finish = FinishJob(leased.id, leased.lease_token or "", TransitionKind.FAIL)
                await q.driver.job_finish_many([finish], retention=Retention())

    asyncio.run(seed())
    return cli_env(CONVEYOR_URL=url, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def commands(block: str) -> list[str]:
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line.replace("<id>", "job-1").replace(" ...", "") for line in lines if line]


def shell(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_the_commands_run_as_written(env: dict[str, str], tmp_path: Path) -> None:
    assert len(BLOCKS) == 2
    listed = commands(BLOCKS[0])
    assert listed[0] == "conveyor queues ls" and "conveyor top" in listed
    for command in listed:
        if command == "conveyor top":  # runs until Ctrl-C: one frame, then Ctrl-C
            proc = subprocess.Popen(
                ["conveyor", "top"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("conveyor top"), command
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            proc.stdout.close()
            continue
        if command == "conveyor dashboard":  # serves until Ctrl-C: one page, then Ctrl-C
            _serve_one_page(env, tmp_path)
            continue
        done = shell(command, env, tmp_path)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    unserved, frame = (shell(c, env, tmp_path) for c in commands(BLOCKS[1]))
    assert unserved.returncode == 0 and unserved.stdout.strip() == "['emails']", unserved.stderr
    assert frame.returncode == 0 and json.loads(frame.stdout)["queues"][0]["name"] == "emails"


def _serve_one_page(env: dict[str, str], cwd: Path) -> None:
    """``conveyor dashboard`` as written (on a free port, so parallel tests do not meet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["conveyor", "dashboard", "--port", str(port)], env=env, cwd=cwd, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "no dashboard"
                time.sleep(0.05)
        assert page.status_code == 200 and 'data-queue="emails"' in page.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def documented_keys() -> dict[str, list[str]]:
    """Each command of the table and its top-level keys; "as `other command`, and `k`" means
    that command's keys and then `k`."""
    rows = dict(re.findall(r"^\| `([^`]+)` \| [^|]+ \| (.+) \|$", SECTION, re.M))

    def keys(command: str) -> list[str]:
        text = rows[command]
        same = re.match(r"as `([^`]+)`(.*)", text)
        if same is None:  # what a parenthesis says about a key's contents is not a key
            return re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", text))
        [base] = [c for c in rows if c.startswith(same[1])]
        inherited = keys(base)
        extra = re.findall(r"`(\w+)`", same[2])
        return inherited + [k for k in extra if k not in (*inherited, "retry", "cancel")]

    return {command: keys(command) for command in rows}


def test_the_documented_json_keys_are_the_printed_ones(env: dict[str, str], tmp_path: Path) -> None:
    table = documented_keys()
    assert len(table) == 10
    order = [
        "jobs ls --json",
        "jobs show --json <id>",
        "queues ls --json",
        "workers --json",
        "cron ls --json",
        "top --once --json",
        "jobs retry --json <id>",
        "jobs cancel --json <id>",
        "jobs retry --all-failed --json",
        "jobs purge --json --yes",
    ]
    assert sorted(order) == sorted(table)
    for command in order:
        args = ["--url", env["CONVEYOR_URL"], *command.replace("<id>", "job-1").split()]
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 0, f"{command}\n{done.output}"
        data = json.loads(done.stdout)
        items = data if isinstance(data, list) else [data]
        if command in ("workers --json", "cron ls --json"):
            assert (
                items == []
            )  # nothing to show here; the shapes are tested in test_json_and_tables
            continue
        assert items, command
        assert set(items[0]) == set(table[command]), command
