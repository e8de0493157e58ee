"""The README's outbox example runs as written: SQLite data, the job on Redis, moved by
``conveyor relay``."""

from __future__ import annotations

import ast
import inspect
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import Queue, SyncQueue
from tests.process.harness import CONVEYOR, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE = re.compile(r"```python\n# outbox_example\.py\n(.*?)```", re.S)


def example() -> str:
    found = EXAMPLE.search(README.read_text())
    assert found is not None, "the README's outbox example is missing"
    return found[1]


def test_the_example_is_valid_python() -> None:
    ast.parse(example())


def _queue_takes_an_outbox() -> bool:
    return "outbox" in inspect.signature(Queue.__init__).parameters and (
        "connection" in inspect.signature(Queue.enqueue).parameters
    )


@pytest.mark.skipif(
    not _queue_takes_an_outbox(),
    reason="Queue(outbox=...) and enqueue(connection=...) are not on this branch yet",
)
def test_the_example_runs_as_written(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "outbox_example.py").write_text(example())
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["REDIS_URL"] = redis_url
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> str:
        done = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    run(*CONVEYOR, "migrate", "--outbox", "sqlite:///app.db")
    job_id = run(sys.executable, "outbox_example.py").strip()
    assert job_id == "welcome:1"
    relay = subprocess.Popen(
        [*CONVEYOR, "relay", "--from", "sqlite:///app.db", "--to", redis_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    queue = SyncQueue.from_url(redis_url)
    try:
        info = wait_for(lambda: queue.get(job_id), timeout=20, what="the job in Redis")
        assert info.name == "users.welcome" and info.queue == "emails"
    finally:
        queue.close()
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(20) == 0
