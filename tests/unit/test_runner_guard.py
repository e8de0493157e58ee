"""A job task that dies of a bug of ours releases its lease, so the job is rescued."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conveyor._config import WorkerConfig
from conveyor.backends.memory import MemoryDriver
from conveyor.drivers.records import JobRecord, Retention
from conveyor.runtime.completer import Completer
from conveyor.runtime.lifecycle import WorkerStats
from conveyor.runtime.registry import HandlerRegistry
from conveyor.runtime.runner import Runner
from tests.unit.keepers import RecordingKeeper
from tests.unit.records import active_record


def _record() -> JobRecord:
    return active_record(
        name="unknown.job", run_at=0.0, enqueued_at=0.0, started_at=None, lease_token="tok-1"
    )


async def test_a_job_task_that_fails_releases_its_lease_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = MemoryDriver()
    config = WorkerConfig()
    runner = Runner(
        driver=driver,
        registry=HandlerRegistry(),
        completer=Completer(driver, retention=Retention(), clock=config.clock),
        config=config,
        worker_id="w",
        max_result_bytes=1000,
        stats=WorkerStats(),
        slot_freed=asyncio.Event(),
    )
    keeper = RecordingKeeper()
    runner.keeper = keeper

    async def broken(entry: object) -> None:
        raise RuntimeError("a bug")

    runner._attempt = broken  # type: ignore[method-assign]  # pyright: ignore[reportPrivateUsage]
    caplog.set_level(logging.ERROR, "conveyor.worker")
    runner.start(_record())
    task = runner.running["j1"].task
    assert task is not None
    await task
    assert keeper.released == [("j1", "tok-1")]
    assert "the task of job j1 failed" in caplog.text
