"""conveyor.flask: a Flask app served by werkzeug enqueues from its views through the
extension's SyncQueue, a real worker runs the jobs; each process has a queue of its own, closed
when the process exits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from flask import Flask, request

from conveyor import JobContext, JobState, Queue, SyncQueue, Worker
from conveyor.flask import Conveyor, current_queue
from tests.conformance.worker.helpers import fast_config
from tests.integrations.servers import Werkzeug, backend_url
from tests.integrations.test_fastapi import SendInvite, send_invite


def invitations_app(url: str) -> tuple[Flask, Conveyor]:
    conveyor = Conveyor()
    app = Flask(__name__)
    app.config["CONVEYOR_URL"] = url
    conveyor.init_app(app)

    @app.post("/invitations")
    def invite() -> dict[str, str]:
        body = SendInvite.model_validate(request.get_json())
        handle = conveyor.queue.enqueue(send_invite, body)
        return {"job_id": handle.id}

    @app.get("/jobs/<job_id>")
    def show(job_id: str) -> dict[str, str]:
        info = current_queue().get(job_id)
        return {"state": "missing" if info is None else info.state.value}

    return app, conveyor


async def drain(url: str) -> list[str]:
    sent: list[str] = []
    async with Queue.from_url(url) as queue:
        worker = Worker(queue, config=fast_config(burst=True))

        @worker.handles(send_invite)
        def handle(payload: SendInvite, ctx: JobContext) -> str:
            sent.append(payload.to_email)
            return "sent"

        async with asyncio.timeout(30):
            await worker.run()
    return sent


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_a_view_enqueues_and_a_worker_runs_the_job(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = backend_url(backend, tmp_path, request)
    app, conveyor = invitations_app(url)
    assert app.extensions["conveyor"] is conveyor
    try:
        with Werkzeug(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            ids = [
                client.post("/invitations", json={"to_email": f"{n}@example.com"}).json()["job_id"]
                for n in range(3)
            ]
            assert [client.get(f"/jobs/{i}").json() for i in ids] == [{"state": "queued"}] * 3
            assert sorted(asyncio.run(drain(url))) == [f"{n}@example.com" for n in range(3)]
            assert [client.get(f"/jobs/{i}").json() for i in ids] == [{"state": "completed"}] * 3
    finally:
        conveyor.close()


def test_the_url_comes_from_the_config_then_the_argument(tmp_path: Path) -> None:
    configured = Flask(__name__)
    configured.config["CONVEYOR_URL"] = f"sqlite:///{tmp_path / 'config.db'}"
    assert Conveyor(configured, url="memory://argument").url.endswith("config.db")
    assert Conveyor(Flask(__name__), url="memory://argument").url == "memory://argument"
    assert Conveyor(Flask(__name__)).url == "sqlite:///conveyor.db"
    with pytest.raises(ValueError, match="one Conveyor"):
        conveyor = Conveyor(configured)
        other = Flask(__name__)
        other.config["CONVEYOR_URL"] = "memory://elsewhere"
        conveyor.init_app(other)


def test_one_queue_per_process_until_closed(tmp_path: Path) -> None:
    conveyor = Conveyor(url=f"sqlite:///{tmp_path / 'q.db'}")
    queue = conveyor.queue
    assert conveyor.queue is queue
    queue.enqueue(send_invite, SendInvite(to_email="a@example.com"))
    conveyor.close()
    assert queue.closed
    conveyor.close()  # idempotent
    assert conveyor.queue is not queue and conveyor.queue.counts()[JobState.QUEUED] == 1
    conveyor.close()


def test_current_queue_needs_the_extension() -> None:
    with Flask(__name__).app_context(), pytest.raises(RuntimeError, match="no Conveyor"):
        current_queue()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_gets_a_queue_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    conveyor = Conveyor(url=url)
    parent = conveyor.queue
    parent.enqueue(send_invite, SendInvite(to_email="parent@example.com"))  # its thread runs
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's exit handlers
        code = 1
        try:
            child = conveyor.queue
            handle = child.enqueue(send_invite, SendInvite(to_email="child@example.com"))
            os.write(write, f"{child is not parent} {handle.id}".encode())
            conveyor.close()
            code = 0 if child.closed and not parent.closed else 2
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        own, job_id = pipe.read().split()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert own == "True"
    # The parent's queue still works, and sees the child's job.
    assert conveyor.queue is parent and not parent.closed
    info = parent.get(job_id)
    assert info is not None and info.state is JobState.QUEUED
    conveyor.close()


def test_the_queue_is_closed_when_the_process_exits(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import atexit
        seen = []
        # Registered before conveyor.flask's own handler, so it runs after it.
        atexit.register(lambda: print("closed at exit:", seen[0].closed))

        from flask import Flask
        from conveyor.flask import Conveyor
        from tests.integrations.test_fastapi import SendInvite, send_invite

        app = Flask(__name__)
        app.config["CONVEYOR_URL"] = {f"sqlite:///{tmp_path / 'q.db'}"!r}
        conveyor = Conveyor(app)
        seen.append(conveyor.queue)
        print("enqueued:", conveyor.queue.enqueue(send_invite, SendInvite(to_email="a@b.c")).id)
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("enqueued: ") and lines[1] == "closed at exit: True"
    job_id = lines[0].removeprefix("enqueued: ")
    with SyncQueue.from_url(f"sqlite:///{tmp_path / 'q.db'}") as queue:
        info = queue.get(job_id)
        assert info is not None and info.state is JobState.QUEUED
