"""The README's FastAPI, Flask and testing sections run as written: their files join the tour's
in a folder of their own, the servers run as the commands say (uvicorn, ``flask run``), a real
worker process runs the jobs, and the test file runs under pytest."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
from pydantic import BaseModel

from conveyor import job
from conveyor.testing import assert_enqueued, memory_queue

README = Path(__file__).resolve().parents[2] / "README.md"
FILE_BLOCK = re.compile(r"```python\n# ((?:app|tests)/\w+\.py)\n(.*?)```", re.S)
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The tour's files and these sections' files, written out, with an environment on a
    SQLite file of their own."""
    files = FILE_BLOCK.findall(README.read_text())
    names = {name for name, _ in files}
    assert {"app/web.py", "app/flask_app.py", "tests/conftest.py"} <= names
    for folder in ("app", "tests"):
        (tmp_path / folder).mkdir()
    for name, code in files:
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["CONVEYOR_URL"] = f"sqlite:///{tmp_path / 'jobs.db'}"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(tmp_path)
    return tmp_path, env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def commands(title: str) -> list[str]:
    block = re.search(r"```bash\n(.*?)```", section(title), re.S)
    assert block is not None
    return [line.split("#")[0].strip() for line in block[1].splitlines() if line.strip()]


@pytest.fixture
def served(project: tuple[Path, dict[str, str]]) -> Iterator[ServerStarter]:
    starter = ServerStarter(*project)
    yield starter
    starter.stop()


class ServerStarter:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.process: subprocess.Popen[str] | None = None

    def start(self, command: str, port: int, ready_path: str) -> str:
        args = [*command.split(), "--port", str(port)]
        self.process = subprocess.Popen(
            args,
            cwd=self.cwd,
            env={**self.env, "PYTHONFAULTHANDLER": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process.poll() is None, self.stop()
            try:
                if httpx.get(base + ready_path, timeout=1).status_code < 500:
                    return base
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{command} did not start"
            time.sleep(0.05)

    def stop(self) -> str:
        """Stop the server with Ctrl-C, as a reader would; its output. One that does not stop
        is made to print every thread's stack (faulthandler, on SIGABRT) and fails the test."""
        process, self.process = self.process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                out, _ = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            raise AssertionError(f"the server did not stop on Ctrl-C; its output:\n{out}") from None
        return out

    def work(self) -> str:
        """Drain the queues with the tour's worker."""
        done = subprocess.run(
            ["conveyor", "worker", "app.worker:worker", "--burst"],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def test_the_fastapi_app_runs_as_written(served: ServerStarter) -> None:
    serve, work = commands("FastAPI and Starlette")
    assert serve == "uvicorn app.web:app" and work == "conveyor worker app.worker:worker"
    base = served.start(serve, free_port(), "/docs")
    job_id = httpx.post(f"{base}/invitations", json={"email": "ada@example.com"}).json()["job_id"]
    assert httpx.get(f"{base}/invitations/jobs/{job_id}").json() == {"state": "queued"}
    assert "sent an invitation to ada@example.com" in served.work()
    assert httpx.get(f"{base}/invitations/jobs/{job_id}").json() == {"state": "completed"}
    dashboard = httpx.get(f"{base}/jobs/queues/emails")
    assert dashboard.status_code == 200 and "email.send_invite" in dashboard.text
    output = served.stop()
    assert "the app's own startup: the queue is open already" in output


def test_the_flask_app_runs_as_written(served: ServerStarter, tmp_path: Path) -> None:
    [serve] = commands("Flask")
    assert serve == "flask --app app.flask_app run"
    served.env["FLASK_CONVEYOR_URL"] = served.env.pop("CONVEYOR_URL")
    served.env["CONVEYOR_URL"] = "memory://not-this-one"  # the app's config comes first
    base = served.start(serve, free_port(), "/")
    answer = httpx.post(f"{base}/invitations", json={"email": "bob@example.com"})
    output = served.stop()
    assert answer.status_code == 200, output
    job_id = answer.json()["job_id"]
    served.env["CONVEYOR_URL"] = served.env["FLASK_CONVEYOR_URL"]
    assert "sent an invitation to bob@example.com" in served.work()
    assert (
        job_id
        in subprocess.run(
            ["conveyor", "jobs", "ls", "--state", "completed"],
            cwd=tmp_path,
            env=served.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )


def test_the_testing_example_passes(project: tuple[Path, dict[str, str]]) -> None:
    cwd, env = project
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_the_shown_failure_is_what_assert_enqueued_says() -> None:
    shown = re.search(
        r"\n```\n(expected at least 1 job .*?)\n```", section("Testing your jobs"), re.S
    )
    assert shown is not None

    class SendInvite(BaseModel):
        invitation_id: UUID
        to_email: str

    send_invite = job("email.send_invite", SendInvite, result=str, queue="emails")
    queue = memory_queue()
    payload = SendInvite(invitation_id=uuid4(), to_email="eve@example.com")
    asyncio.run(queue.enqueue(send_invite, payload))
    with pytest.raises(AssertionError) as raised:
        assert_enqueued(queue, send_invite, {"to_email": "eve@example.org"})

    def masked(text: str) -> str:  # the job's id and invitation id differ from run to run
        text = re.sub(r"id=\S+", "id=...", text)
        return re.sub(r'"invitation_id": "[^"]*"', '"invitation_id": "..."', text)

    assert masked(str(raised.value)) == masked(shown[1])
