"""``conveyor dashboard``: refuses to expose itself without credentials, serves with them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from conveyor.cli.dashboard import loopback_host
from conveyor.cli.main import cli
from tests.dashboard.conftest import enqueue_notes, run

CONVEYOR = Path(sys.executable).parent / "conveyor"


def test_it_refuses_a_public_address_without_credentials(sqlite_url: str) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.2", "example.com"):
        result = CliRunner().invoke(cli, ["--url", sqlite_url, "dashboard", "--host", host])
        assert result.exit_code == 2, result.output
        assert f"refusing to serve the dashboard on {host} without credentials" in result.output
        assert "--token" in result.output


def test_a_bad_users_variable_is_a_clear_error(sqlite_url: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["--url", sqlite_url, "dashboard", "--host", "0.0.0.0"],
        env={"CONVEYOR_DASHBOARD_USERS": "ada:pw,justapassword"},
    )
    assert result.exit_code == 2
    assert "$CONVEYOR_DASHBOARD_USERS: entry 2 is not name:password" in result.output
    assert "justapassword" not in result.output
    short = CliRunner().invoke(cli, ["--url", sqlite_url, "dashboard", "--token", "short"])
    assert short.exit_code == 1 and "at least 8 characters" in short.output


def test_loopback_hosts() -> None:
    assert loopback_host("127.0.0.1") and loopback_host("localhost") and loopback_host("::1")
    assert loopback_host("[::1]")
    assert not loopback_host("0.0.0.0") and not loopback_host("db.internal")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_it_serves_with_a_token(sqlite_url: str) -> None:
    run(enqueue_notes(sqlite_url, ["from the cli"]))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["CONVEYOR_DASHBOARD_TOKEN"] = "cli-token-123"
    proc = subprocess.Popen(
        [str(CONVEYOR), "--url", sqlite_url, "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"{base}/", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.1)
        assert answer.status_code == 401
        page = httpx.get(f"{base}/", headers={"authorization": "Bearer cli-token-123"})
        assert page.status_code == 200 and 'data-queue="emails"' in page.text
    finally:
        proc.terminate()
        proc.wait(30)
