"""The completer: only an unavailable backend is retried; an outcome the backend refuses fails
only its own job, and one that cannot even be failed is given up, never retried forever."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from conveyor import BackendError, BackendUnavailable
from conveyor.backends.memory import MemoryDriver
from conveyor.core.clock import BackendClock
from conveyor.drivers.records import (
    FetchParams,
    FinishJob,
    JobState,
    NewJob,
    Retention,
    TransitionKind,
    TransitionResult,
)
from conveyor.runtime.completer import Completer

T0 = 1_700_000_000.0


class Refusing(MemoryDriver):
    """Refuses any batch holding a finish whose error contains ``poison`` (as a backend refuses
    a value it cannot store), and is unavailable for the first ``outages`` calls."""

    def __init__(self, url: str, *, outages: int = 0, refuse_fallback: bool = False) -> None:
        super().__init__(url)
        self.outages = outages
        self.refuse_fallback = refuse_fallback
        self.calls: list[list[str]] = []

    async def job_finish_many(  # type: ignore[override]
        self, finishes: Sequence[FinishJob], *, retention: Retention, now: float | None = None
    ) -> list[TransitionResult]:
        self.calls.append([f.job_id for f in finishes])
        if self.outages:
            self.outages -= 1
            raise BackendUnavailable("connection reset")
        for f in finishes:
            poisoned = f.error is not None and "poison" in f.error
            fallback = f.error is not None and f.error.startswith("OutcomeNotWritten")
            if poisoned or (fallback and self.refuse_fallback):
                raise BackendError(f"cannot store the error of {f.job_id}")
        return await super().job_finish_many(finishes, retention=retention, now=now)


async def leased(driver: MemoryDriver, *ids: str) -> dict[str, str]:
    await driver.job_insert_many([NewJob(i, "q", "n", b"{}") for i in ids], now=T0)
    jobs = await driver.job_fetch(FetchParams(("q",), len(ids), "w", 30), now=T0)
    return {j.id: j.lease_token or "" for j in jobs}


async def run_completer(driver: MemoryDriver, finishes: list[FinishJob]) -> dict[str, object]:
    completer = Completer(driver, retention=Retention(), clock=BackendClock(), retry_cap=0.01)
    results: dict[str, object] = {}
    task = asyncio.create_task(completer.run())
    for finish in finishes:
        completer.submit(finish, lambda f, r: results.__setitem__(f.job_id, r))
    await asyncio.wait_for(completer.close(), 10)
    await task
    return results


async def test_a_refused_outcome_fails_only_its_job() -> None:
    driver = Refusing("memory://")
    tokens = await leased(driver, "a", "b", "c")
    results = await run_completer(
        driver,
        [
            FinishJob("a", tokens["a"], TransitionKind.COMPLETE, result=b"1"),
            FinishJob("b", tokens["b"], TransitionKind.RETRY, error="poison"),
            FinishJob("c", tokens["c"], TransitionKind.COMPLETE, result=b"3"),
        ],
    )
    assert set(results) == {"a", "b", "c"}
    a, b, c = await driver.job_get_many(["a", "b", "c"])
    assert a and b and c
    assert (a.state, c.state) == (JobState.COMPLETED, JobState.COMPLETED)
    assert b.state is JobState.FAILED
    assert b.error is not None and b.error.startswith("OutcomeNotWritten: the retry")
    assert len(driver.calls) == 5  # the batch, then a, b, b's failure, c: bounded


async def test_an_outcome_that_cannot_even_fail_is_given_up_not_retried_forever() -> None:
    driver = Refusing("memory://", refuse_fallback=True)
    tokens = await leased(driver, "a", "b")
    results = await run_completer(
        driver,
        [
            FinishJob("a", tokens["a"], TransitionKind.FAIL, error="poison"),
            FinishJob("b", tokens["b"], TransitionKind.COMPLETE, result=b"2"),
        ],
    )
    assert results["a"] is None  # given up: its lease is left to expire, so it is rescued
    a, b = await driver.job_get_many(["a", "b"])
    assert a and b and (a.state, b.state) == (JobState.ACTIVE, JobState.COMPLETED)


async def test_an_unavailable_backend_is_retried_until_the_batch_is_written() -> None:
    driver = Refusing("memory://", outages=3)
    tokens = await leased(driver, "a")
    results = await run_completer(
        driver, [FinishJob("a", tokens["a"], TransitionKind.COMPLETE, result=b"1")]
    )
    assert len(driver.calls) == 4
    [a] = await driver.job_get_many(["a"])
    assert a and a.state is JobState.COMPLETED and results["a"] is not None


async def test_the_backlog_is_bounded_by_back_pressure() -> None:
    driver = Refusing("memory://", outages=10**6)
    completer = Completer(
        driver, retention=Retention(), clock=BackendClock(), max_backlog=3, retry_cap=0.01
    )
    task = asyncio.create_task(completer.run())
    for n in range(3):
        completer.submit(FinishJob(f"j{n}", "t", TransitionKind.COMPLETE), lambda f, r: None)
    assert not completer.has_room
    waiting = asyncio.create_task(completer.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # what the fetcher awaits before leasing more
    driver.outages = 0
    await asyncio.wait_for(waiting, 10)
    await asyncio.wait_for(completer.close(), 10)
    await task
