"""The real entry point (``conveyor``, ``python -m conveyor``): exit codes and error messages."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor import Queue, job
from conveyor.cli import main


class Ping(BaseModel):
    n: int


ping = job("test.ping", Ping)


@pytest.fixture
def url(tmp_path: Path) -> str:
    async def seed() -> None:
        async with Queue.from_url(f"sqlite:///{tmp_path / 'main.db'}") as q:
            await q.enqueue(ping, Ping(n=1), job_id="waiting")

    asyncio.run(seed())
    return f"sqlite:///{tmp_path / 'main.db'}"


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Call ``main()`` as the console script does; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["conveyor", *args])
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert code is None or isinstance(code, int), code
    return code or 0, out.out, out.err


def test_python_dash_m_exits_1_when_a_retry_fails(url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", url, "jobs", "retry", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "not retried nope: not_found" in proc.stderr


def test_python_dash_m_exits_0_on_success(url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "--url", url, "jobs", "cancel", "waiting"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "cancelled waiting" in proc.stdout


def test_failed_cancel_exits_1(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(monkeypatch, capsys, "--url", url, "jobs", "cancel", "nope")
    assert code == 1
    assert "not cancelled nope: not_found" in err


def test_partly_failed_retry_exits_1_but_does_the_rest(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, capsys, "--url", url, "jobs", "cancel", "waiting")[0] == 0
    code, out, err = run_main(monkeypatch, capsys, "--url", url, "jobs", "retry", "waiting", "x")
    assert code == 1
    assert "retried waiting" in out and "not retried x: not_found" in err


def test_conveyor_error_prints_error_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(monkeypatch, capsys, "--url", "ftp://x", "queues", "ls")
    assert code == 1
    assert "Error: unsupported backend URL 'ftp://x'" in err
    assert "Traceback" not in out + err


def test_usage_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(monkeypatch, capsys, "jobs", "retry")
    assert code == 2 and "--all-failed" in err


def test_success_exits_0(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "--url", url, "jobs", "ls")
    assert code == 0 and "waiting" in out
