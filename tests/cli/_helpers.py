"""Helpers of the CLI tests: seeding real stores, running the real command line in a process of
its own (piped or on a pseudo-terminal)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from conveyor import Queue, job
from conveyor.drivers.records import FetchParams, FinishJob, Retention, TransitionKind, WorkerInfo


class Ping(BaseModel):
    n: int


ping = job("test.ping", Ping)
pong = job("test.pong", Ping, queue="other")

SRC = Path(__file__).resolve().parents[2] / "src"


async def fail_jobs(
    q: Queue, count: int, *, queue: str = "default", name: str = "x", at: float | None = None
) -> None:
    """``count`` jobs of ``queue`` that ran once and failed for good (at ``at``: now)."""
    definition = ping if queue == "default" else pong
    requests = [
        definition.request(Ping(n=i), job_id=f"{name}-{i}", attempts=1) for i in range(count)
    ]
    for start in range(0, count, 500):
        await q.enqueue_many(requests[start : start + 500])
    done = 0
    while done < count:
        leased = await q.driver.job_fetch(FetchParams((queue,), 500, "w", 30.0))
        assert leased, f"only {done} of {count} jobs could be leased"
        finishes = [
            FinishJob(j.id, j.lease_token or "", TransitionKind.FAIL, error="ValueError: boom")
            for j in leased
        ]
        await q.driver.job_finish_many(finishes, retention=Retention(), now=at)
        done += len(leased)


async def heartbeat(q: Queue, *queues: str, worker_id: str = "host:1:abc") -> None:
    info = WorkerInfo(worker_id, "host", 1, queues, 5, time.time())
    await q.driver.worker_heartbeat(info, ttl=60)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *extra.pop("PYTHONPATH", "").split(os.pathsep)])
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """The real ``conveyor`` in a process of its own, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run ``conveyor`` with stdout and stderr on a pseudo-terminal; its exit code and all it
    wrote there (escape codes included)."""
    main, secondary = os.openpty()
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode(errors="replace")
