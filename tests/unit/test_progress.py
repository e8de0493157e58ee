"""``JobContext.progress`` and the progress batcher: values are checked in the handler, only the
latest of each job is written, in one call for all jobs, and a failed write is logged, never
raised."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from conveyor import BackendUnavailable, InvalidArgument, JobContext
from conveyor._context import epoch_to_datetime, new_context
from conveyor.backends.memory import MemoryDriver
from conveyor.core.clock import BackendClock
from conveyor.drivers.records import (
    FetchParams,
    NewJob,
    ProgressUpdate,
    TransitionResult,
)
from conveyor.runtime.progress import ProgressBatcher

T0 = 1_700_000_000.0


class Recording(MemoryDriver):
    """Records each progress call; unavailable while ``down``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[list[tuple[str, float]]] = []
        self.down = False

    async def job_progress_many(
        self, updates: Sequence[ProgressUpdate], *, now: float | None = None
    ) -> list[TransitionResult]:
        self.calls.append([(u.job_id, u.fraction) for u in updates])
        if self.down:
            raise BackendUnavailable("connection reset")
        return await super().job_progress_many(updates, now=now)


async def leased(driver: MemoryDriver, *ids: str) -> dict[str, str]:
    await driver.job_insert_many([NewJob(i, "q", "n", b"{}") for i in ids], now=T0)
    jobs = await driver.job_fetch(FetchParams(("q",), len(ids), "w", 30), now=T0)
    return {j.id: j.lease_token or "" for j in jobs}


def context(sink: object = None) -> JobContext:
    return JobContext(
        job_id="j",
        job_name="n",
        queue="q",
        attempt=1,
        max_attempts=1,
        enqueued_at=datetime.now(UTC),
        worker_id="w",
        logger=logging.LoggerAdapter(logging.getLogger("t")),
        _sink=sink,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("value", [True, "half", 1.01, -0.5, float("nan"), float("inf")])
def test_progress_refuses_what_is_not_a_fraction(value: object) -> None:
    ctx = context()
    with pytest.raises(InvalidArgument, match="from 0 to 1"):
        ctx.progress(value)  # type: ignore[arg-type]
    assert ctx.last_progress is None
    ctx.progress(1)
    assert ctx.last_progress == 1.0


def test_progress_cuts_long_messages_and_makes_them_writable() -> None:
    seen: list[tuple[float, str | None]] = []
    ctx = context(lambda f, m: seen.append((f, m)))
    ctx.progress(0.1, "y" * 1000)
    ctx.progress(0.2, "nul\x00byte")
    with pytest.raises(InvalidArgument, match="must be a str"):
        ctx.progress(0.3, 42)  # type: ignore[arg-type]
    assert seen == [(0.1, "y" * 500), (0.2, "nul\\x00byte")]


async def test_only_the_latest_value_of_each_job_is_written_in_one_call() -> None:
    driver = Recording("memory://")
    tokens = await leased(driver, "a", "b")
    batcher = ProgressBatcher(driver, clock=BackendClock())
    for n in range(10):
        batcher.report("a", tokens["a"], "q", n / 10, None)
    batcher.report("b", tokens["b"], "q", 0.5, "half")
    assert batcher.pending == 2
    await batcher.flush()
    assert driver.calls == [[("a", 0.9), ("b", 0.5)]]
    assert batcher.pending == 0
    await batcher.flush()  # nothing pending: no call
    assert len(driver.calls) == 1
    [a, b] = await driver.job_get_many(["a", "b"])
    assert a is not None and a.progress == 0.9
    assert b is not None and (b.progress, b.progress_message) == (0.5, "half")


async def test_flushing_some_jobs_leaves_the_others_pending() -> None:
    driver = Recording("memory://")
    tokens = await leased(driver, "a", "b")
    batcher = ProgressBatcher(driver, clock=BackendClock())
    batcher.report("a", tokens["a"], "q", 0.1, None)
    batcher.report("b", tokens["b"], "q", 0.2, None)
    await batcher.flush_jobs(["a", "missing"])
    assert driver.calls == [[("a", 0.1)]] and batcher.pending == 1
    await batcher.flush_jobs(["a"])  # none pending for it: no round trip
    assert len(driver.calls) == 1


async def test_a_failed_write_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    driver = Recording("memory://")
    tokens = await leased(driver, "a")
    batcher = ProgressBatcher(driver, clock=BackendClock())
    driver.down = True
    batcher.report("a", tokens["a"], "q", 0.3, None)
    with caplog.at_level(logging.WARNING, logger="conveyor.worker"):
        await batcher.flush()
    assert "writing the progress of 1 job(s) failed" in caplog.text
    assert batcher.pending == 0


async def test_the_backlog_is_bounded() -> None:
    driver = Recording("memory://")
    batcher = ProgressBatcher(driver, clock=BackendClock(), max_pending=2)
    for job_id in ("a", "b", "c"):
        batcher.report(job_id, "t", "q", 0.5, None)
    batcher.report("a", "t", "q", 0.7, None)  # a job already pending is updated
    assert batcher.pending == 2


def test_the_workers_context_constructor_equals_the_dataclass_constructor() -> None:
    logger = logging.LoggerAdapter(logging.getLogger("t"))
    at = epoch_to_datetime(1700000000.0)
    fast = new_context("j", "n", "q", 2, 5, at, "w", logger, None)
    slow = JobContext(
        job_id="j",
        job_name="n",
        queue="q",
        attempt=2,
        max_attempts=5,
        enqueued_at=at,
        worker_id="w",
        logger=logger,
    )
    names = {f.name for f in dataclasses.fields(JobContext)}
    assert set(vars(fast)) == names == set(vars(slow))
    for f in dataclasses.fields(JobContext):
        if f.name != "cancelled":
            assert getattr(fast, f.name) == getattr(slow, f.name), f.name
    assert isinstance(fast.cancelled, threading.Event) and not fast.cancelled.is_set()
    assert fast.cancelled is not new_context("j", "n", "q", 2, 5, at, "w", logger, None).cancelled
