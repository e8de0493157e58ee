"""``conveyor worker --reload``: editing a handler file restarts the worker, which runs the new
code; files the reloader must ignore do not restart it; a file saved broken waits for a fix."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import job
from tests.process.harness import Harness, WorkerProcess, wait_for

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

APP = """\
from pydantic import BaseModel

from conveyor import JobContext, Queue, Worker, WorkerConfig, job
from tests.process.app import ledger

VALUE = "{value}"


class Ask(BaseModel):
    n: int


version = job("reload.version", Ask, result=str)
queue = Queue.from_url()
worker = Worker(queue, config=WorkerConfig(poll_interval=0.05), jobs=[version])


@worker.handles(version)
async def run_version(payload: Ask, ctx: JobContext) -> str:
    ledger.record("start", ctx)
    ledger.record("end", ctx)
    return VALUE
"""


class Ask(BaseModel):
    n: int


version = job("reload.version", Ask, result=str)


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}")
    try:
        yield h
    finally:
        h.kill_all()
        h.queue.close()


def log_events(proc: WorkerProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in proc.log().splitlines():
        try:
            body = json.loads(line)
        except ValueError:  # the traceback of a child that could not import the app
            continue
        if body.get("event") == event:
            found.append(body)
    return found


def count_of(proc: WorkerProcess, event: str, count: int) -> list[dict[str, Any]] | None:
    found = log_events(proc, event)
    return found if len(found) >= count else None


def run_version(h: Harness, n: int) -> str:
    handle = h.queue.enqueue(version, Ask(n=n), job_id=f"ask-{n}")
    info = h.wait_state(handle.id, "completed", timeout=30)
    assert isinstance(info.result, str)
    return info.result


def test_editing_the_handler_restarts_the_worker_with_the_new_code(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    app = h.root / "reload_app.py"
    app.write_text(APP.format(value="one"))
    w = h.start_worker("--reload", "--log-format", "json", target="reload_app:worker")
    wait_for(lambda: count_of(w, "started", 1), timeout=20, what="the first worker")
    assert run_version(h, 1) == "one"

    # Files the reloader ignores, written before the edit: had any of them restarted the
    # worker, the first restart would name it (or come first).
    for ignored in (".venv/lib/x.py", "__pycache__/y.py", ".git/z.py", "node_modules/m.py"):
        (h.root / ignored).parent.mkdir(parents=True, exist_ok=True)
        (h.root / ignored).write_text("X = 1\n")
    (h.root / "notes.txt").write_text("not Python\n")

    edited = time.time()
    app.write_text(APP.format(value="two"))  # the same size: a stale .pyc would go unnoticed
    started = wait_for(lambda: count_of(w, "process_started", 2), timeout=10, what="a restart")
    restart_took = datetime.fromisoformat(started[1]["ts"]).timestamp() - edited
    wait_for(lambda: count_of(w, "started", 2), timeout=20, what="the new worker")
    ready_took = datetime.fromisoformat(log_events(w, "started")[1]["ts"]).timestamp() - edited
    print(f"edit -> new worker process {restart_took:.2f}s, -> worker started {ready_took:.2f}s")
    assert restart_took < 2.0, f"restarted {restart_took:.2f}s after the edit"
    [reload] = log_events(w, "reload")
    assert reload["message"] == "reload_app.py changed: restarting the worker"
    [first_exit] = log_events(w, "process_exited")
    assert first_exit["exit_status"] == 0, "the old worker stopped gracefully"
    assert run_version(h, 2) == "two"
    pids = [e["pid"] for e in h.events(event="end")]
    assert pids[0] != pids[1] and pids[1] == started[1]["pid"]

    # Saved broken: the worker dies at import and waits for the next change.
    app.write_text(APP.format(value="three") + "\nthis is not Python\n")
    wait_for(lambda: count_of(w, "process_exited", 3), timeout=20, what="the broken worker")
    broken = log_events(w, "process_exited")[2]
    assert broken["exit_status"] != 0 and "restarting on the next change" in broken["message"]
    app.write_text(APP.format(value="three"))
    assert run_version(h, 3) == "three"
    assert len(log_events(w, "process_started")) == 4

    w.send(signal.SIGTERM)
    assert w.wait_exit(timeout=20) == 0, w.log()
