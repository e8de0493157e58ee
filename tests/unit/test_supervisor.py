"""Background loops that die are restarted, or stop the worker with an error: a worker never
runs on without its completer, maintenance or heartbeat."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from conveyor import FakeClock, JobContext, Queue, Worker, WorkerConfig, WorkerFailed, job
from conveyor.backends.memory import MemoryDriver
from conveyor.core.clock import BackendClock
from conveyor.drivers.records import Retention
from conveyor.runtime.completer import Completer
from conveyor.runtime.maintenance import LEADERSHIP_INTERVALS, Maintenance
from conveyor.runtime.supervisor import Supervisor
from tests.conformance.worker.helpers import Num, fast_config

double = job("test.double", Num, result=int)


def make_worker(queue: Queue) -> Worker:
    worker = Worker(queue, config=fast_config(FakeClock()))

    @worker.handles(double)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n * 2

    return worker


async def test_a_loop_that_fails_once_is_restarted_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = Completer._write
    failures = [RuntimeError("a bug in the completer")]

    async def flaky(self: Completer, batch: list[object]) -> None:
        if failures:
            raise failures.pop()
        await original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Completer, "_write", flaky)
    async with Queue.from_url(f"memory://{uuid.uuid4().hex}") as queue:
        worker = make_worker(queue)
        task = asyncio.create_task(worker.run())
        handle = await queue.enqueue(double, Num(n=21))
        assert await handle.result(timeout=10) == 42  # the batch went back and was written
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert "completer loop failed; restarting it" in caplog.text


async def test_a_loop_that_keeps_failing_stops_the_worker_with_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(self: Completer, batch: list[object]) -> None:
        raise RuntimeError("always")

    monkeypatch.setattr(Completer, "_write", broken)
    monkeypatch.setattr("conveyor.runtime.supervisor.MAX_FAILURES", 3)
    async with Queue.from_url(f"memory://{uuid.uuid4().hex}") as queue:
        worker = make_worker(queue)
        task = asyncio.create_task(worker.run())
        await queue.enqueue(double, Num(n=1))
        with pytest.raises(WorkerFailed, match="completer loop kept failing: always"):
            await asyncio.wait_for(task, 30)


async def test_supervisor_gives_up_after_the_failures_it_allows() -> None:
    given_up: list[str] = []
    runs = 0

    async def always() -> None:
        nonlocal runs
        runs += 1
        raise ValueError("boom")

    supervisor = Supervisor(lambda name, exc: given_up.append(name), max_failures=3, first_pause=0)
    supervisor.start("loop", always)
    await asyncio.wait_for(supervisor.task("loop"), 10)
    assert (runs, given_up) == (3, ["loop"])


async def test_a_dead_leaders_successor_takes_over_within_two_intervals() -> None:
    """Before: about three maintenance intervals (15 s) passed before a new leader rescued
    anything. The leadership now lasts two intervals, and the default interval is a sixth of
    the lease, so a successor is rescuing well within half a lease of the leader's death."""
    clock = FakeClock()
    driver = MemoryDriver(f"memory://{uuid.uuid4().hex}")
    common = {"clock": clock, "interval": 1.0, "max_stalls": 2, "retention": Retention()}
    leader = Maintenance(driver, worker_id="a", **common)  # type: ignore[arg-type]
    successor = Maintenance(driver, worker_id="b", **common)  # type: ignore[arg-type]
    await leader.tick()
    await successor.tick()
    assert (leader.is_leader, successor.is_leader) == (True, False)
    clock.advance(LEADERSHIP_INTERVALS * 1.0 - 0.01)  # the leader died just after its tick
    await successor.tick()
    assert not successor.is_leader
    clock.advance(0.01)
    await successor.tick()
    assert successor.is_leader
    assert WorkerConfig(lease_seconds=30).maintenance_every == 5.0
    assert WorkerConfig(lease_seconds=6).maintenance_every == 1.0
    assert isinstance(WorkerConfig().clock, BackendClock)


def test_loggers_are_made_only_for_the_names_a_worker_serves() -> None:
    """Before: a logger per job name seen, kept forever; enqueue_by_name with generated names
    grew the worker's memory without bound."""
    queue = Queue.from_url("memory://loggers")
    worker = make_worker(queue)
    before = set(logging.Logger.manager.loggerDict)
    from conveyor.runtime.runner import Runner

    runner = Runner(
        driver=queue.driver,
        registry=worker.registry,
        completer=None,  # type: ignore[arg-type]
        config=worker.config,
        worker_id="w",
        max_result_bytes=100,
        stats=worker.stats,
        slot_freed=asyncio.Event(),
    )
    made = set(logging.Logger.manager.loggerDict) - before
    assert made <= {"conveyor.job.test", "conveyor.job.test.double"}
    assert list(runner._loggers) == ["test.double"]
