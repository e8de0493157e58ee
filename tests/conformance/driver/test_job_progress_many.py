"""job_progress_many: a leased job's latest progress, fenced by its lease token."""

from __future__ import annotations

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import JobRecord, ProgressUpdate, TransitionKind, TransitionStatus

from ._support import LEASE, T0, fetch, fetch_one, finish, get, insert, rescue


def _update(job: JobRecord, fraction: float, message: str | None = None) -> ProgressUpdate:
    assert job.lease_token is not None
    return ProgressUpdate(job.id, job.lease_token, fraction, message, job.queue)


async def test_progress_is_stored_with_its_message_and_time(driver: Driver) -> None:
    await insert(driver, "a")
    job = await fetch_one(driver)
    assert (await get(driver, "a")).progress is None
    [result] = await driver.job_progress_many([_update(job, 0.42, "step 2 of 5")], now=T0 + 1)
    assert result.status is TransitionStatus.OK
    stored = await get(driver, "a")
    assert (stored.progress, stored.progress_message, stored.progress_at) == (
        0.42,
        "step 2 of 5",
        T0 + 1,
    )
    await driver.job_progress_many([_update(job, 0.5)], now=T0 + 2)
    stored = await get(driver, "a")
    assert (stored.progress, stored.progress_message, stored.progress_at) == (0.5, None, T0 + 2)


async def test_progress_outlives_completion_and_survives_a_retry(driver: Driver) -> None:
    await insert(driver, "a")
    job = await fetch_one(driver)
    await driver.job_progress_many([_update(job, 1.0, "done")], now=T0)
    await finish(driver, job, TransitionKind.RETRY, error="again", delay=0)
    assert (await get(driver, "a")).progress == 1.0
    again = await fetch_one(driver, now=T0 + 1)
    await finish(driver, again, now=T0 + 1)
    completed = await get(driver, "a")
    assert (completed.progress, completed.progress_message) == (1.0, "done")


async def test_a_batch_writes_many_jobs_and_reports_each(driver: Driver) -> None:
    await insert(driver, "a", "b", "c")
    a, b, c = sorted(await fetch(driver, limit=3), key=lambda j: j.id)
    await finish(driver, c)
    results = await driver.job_progress_many(
        [
            _update(a, 0.1),
            ProgressUpdate("b", "not-its-token", 0.2, queue=b.queue),
            _update(c, 0.3),
            ProgressUpdate("missing", "t", 0.4, queue=a.queue),
            _update(b, 0.0, "starting"),
        ],
        now=T0,
    )
    assert [r.status for r in results] == [
        TransitionStatus.OK,
        TransitionStatus.LEASE_LOST,
        TransitionStatus.LEASE_LOST,  # completed: its token no longer admits a write
        TransitionStatus.NOT_FOUND,
        TransitionStatus.OK,
    ]
    assert [(await get(driver, i)).progress for i in "abc"] == [0.1, 0.0, None]
    assert await driver.job_progress_many([], now=T0) == []


async def test_a_worker_that_lost_its_lease_cannot_write_progress(driver: Driver) -> None:
    await insert(driver, "a")
    first = await fetch_one(driver)
    assert (await rescue(driver, now=T0 + LEASE + 1))["requeue"] == ["a"]
    second = await fetch_one(driver, now=T0 + LEASE + 2, worker_id="worker-2")
    [lost] = await driver.job_progress_many([_update(first, 0.9)], now=T0 + LEASE + 3)
    assert lost.status is TransitionStatus.LEASE_LOST
    [ok] = await driver.job_progress_many([_update(second, 0.2)], now=T0 + LEASE + 3)
    assert ok.status is TransitionStatus.OK
    assert (await get(driver, "a")).progress == 0.2


@pytest.mark.parametrize(
    ("fraction", "message", "problem"),
    [
        (1.5, None, "from 0 to 1"),
        (-0.1, None, "from 0 to 1"),
        (float("nan"), None, "from 0 to 1"),
        (0.5, "x" * 501, "at most 500"),
        (0.5, "nul\x00", "NUL"),
    ],
)
async def test_an_invalid_update_refuses_the_whole_batch(
    driver: Driver, fraction: float, message: str | None, problem: str
) -> None:
    await insert(driver, "a", "b")
    a, b = sorted(await fetch(driver, limit=2), key=lambda j: j.id)
    with pytest.raises(InvalidArgument, match=problem):
        await driver.job_progress_many([_update(a, 0.3), _update(b, fraction, message)], now=T0)
    assert (await get(driver, "a")).progress is None
