"""Three real worker processes, the real clock, and a schedule firing every second, through
rolling restarts (SIGTERM) and a crash (SIGKILL): exactly one job per tick, none missing."""

from __future__ import annotations

import signal
import time

import pytest

from tests.process.harness import Harness, WorkerProcess, wait_for

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

TARGET = "tests.process.app.cron_worker:worker"
PREFIX = "cron:proc.tick:"


def ticks(h: Harness) -> dict[int, str]:
    """Tick -> state of every job the schedule made so far."""
    found: dict[int, str] = {}
    before: int | None = None
    while True:
        page = h.queue.list_jobs(name="proc.tick", before_seq=before, limit=500)
        for info in page:
            assert info.id.startswith(PREFIX), info.id
            found[int(info.id.removeprefix(PREFIX))] = info.state.value
        if len(page) < 500:
            return found
        before = page[-1].seq


def start(h: Harness) -> WorkerProcess:
    proc = h.start_worker(target=TARGET)
    proc.wait_log("worker started", timeout=60)
    return proc


def test_three_workers_fire_each_tick_once_through_restarts(harness: Harness) -> None:
    h = harness
    live = [start(h) for _ in range(3)]
    first = wait_for(lambda: ticks(h), timeout=30, what="the first tick").keys()
    begin = min(first)

    # Rolling restarts: one worker at a time stops (SIGTERM) and a new one starts, so two
    # always run; then one is killed outright and replaced.
    for n in range(4):
        time.sleep(1.5)
        old = live.pop(0)
        if n == 3:
            old.send(signal.SIGKILL)
            old.wait_exit(timeout=30)
        else:
            old.send(signal.SIGTERM)
            assert old.wait_exit(timeout=30) == 0, old.log()
        live.append(start(h))
    time.sleep(2.0)
    end = max(ticks(h))
    for proc in live:
        proc.send(signal.SIGTERM)
    for proc in live:
        assert proc.wait_exit(timeout=30) == 0, proc.log()

    # What the killed worker held is rescued and what waits is run: drain it all.
    drain = h.start_worker("--burst", target=TARGET)
    assert drain.wait_exit(timeout=60) == 0, drain.log()

    made = ticks(h)
    window = range(begin, end + 1)
    assert len(window) >= 8, f"the test ran too briefly: {begin}..{end}"
    missing = [t for t in window if t not in made]
    assert not missing, f"ticks with no job: {missing}; logs:\n{h.logs()}"
    # Each job is one tick's (its id says which), and every one of them ran.
    assert all(made[t] == "completed" for t in window), made
    started = {e["job_id"] for e in h.events(event="start")}
    assert {f"{PREFIX}{t}" for t in window} <= started
    assert h.store_problems() == []
