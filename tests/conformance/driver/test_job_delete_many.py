"""job_delete_many: delete finished jobs by id, leaving waiting and active ones alone."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor._errors import InvalidArgument
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    Dedup,
    DedupMode,
    InsertStatus,
    JobState,
    ListParams,
    TransitionKind,
)

from ._support import T0, exists, fetch, finish, insert, new_job


async def test_deletes_finished_jobs_and_reports_the_others(driver: Driver) -> None:
    await insert(driver, "done", "dead", "gone", now=T0)
    await insert(driver, "waiting", now=T0)
    await insert(driver, "later", delay=60, now=T0)
    done, dead, active = await fetch(driver, limit=3)
    await finish(driver, done, now=T0)
    await finish(driver, dead, TransitionKind.FAIL, error="x", now=T0)
    [cancelled] = await driver.job_cancel_many(["waiting"], now=T0)
    assert cancelled.state is JobState.CANCELLED
    await insert(driver, "queued", now=T0)
    results = await driver.job_delete_many(
        ["done", "dead", "waiting", active.id, "later", "queued", "nope"]
    )
    assert results == [
        ChangeResult("done", ChangeStatus.OK, None),
        ChangeResult("dead", ChangeStatus.OK, None),
        ChangeResult("waiting", ChangeStatus.OK, None),
        ChangeResult(active.id, ChangeStatus.WRONG_STATE, JobState.ACTIVE),
        ChangeResult("later", ChangeStatus.WRONG_STATE, JobState.SCHEDULED),
        ChangeResult("queued", ChangeStatus.WRONG_STATE, JobState.QUEUED),
        ChangeResult("nope", ChangeStatus.NOT_FOUND, None),
    ]
    left = sorted(r.id for r in await driver.job_list(ListParams(limit=100)))
    assert left == sorted([active.id, "later", "queued"])
    assert not await exists(driver, "done")
    counts = await driver.job_count_by_state()
    assert counts.get(JobState.COMPLETED, 0) == 0 and counts.get(JobState.FAILED, 0) == 0


async def test_a_deleted_job_frees_its_id_and_dedup_key(driver: Driver) -> None:
    dedup = Dedup(DedupMode.UNTIL_FINISHED, "key")
    await driver.job_insert_many([dataclasses.replace(new_job("a"), dedup=dedup)], now=T0)
    [record] = await fetch(driver)
    await finish(driver, record, TransitionKind.FAIL, error="x", now=T0)
    assert [r.status for r in await driver.job_delete_many(["a"])] == [ChangeStatus.OK]
    again = dataclasses.replace(new_job("a"), dedup=Dedup(DedupMode.THROTTLE, "key", 60))
    [result] = await driver.job_insert_many([again], now=T0 + 1)
    assert result.status is InsertStatus.INSERTED


async def test_throttle_key_of_a_deleted_job_is_free(driver: Driver) -> None:
    dedup = Dedup(DedupMode.THROTTLE, "t", 3600)
    await driver.job_insert_many([dataclasses.replace(new_job("a"), dedup=dedup)], now=T0)
    [record] = await fetch(driver)
    await finish(driver, record, now=T0)
    await driver.job_delete_many(["a"])
    [result] = await driver.job_insert_many(
        [dataclasses.replace(new_job("b"), dedup=dedup)], now=T0 + 1
    )
    assert result.status is InsertStatus.INSERTED


async def test_a_duplicate_id_in_one_call_is_reported_twice(driver: Driver) -> None:
    await insert(driver, "a", now=T0)
    [record] = await fetch(driver)
    await finish(driver, record, now=T0)
    results = await driver.job_delete_many(["a", "a"])
    assert [r.status for r in results] == [ChangeStatus.OK, ChangeStatus.NOT_FOUND]


async def test_empty_and_bad_ids(driver: Driver) -> None:
    assert await driver.job_delete_many([]) == []
    await insert(driver, "a", now=T0)
    [record] = await fetch(driver)
    await finish(driver, record, now=T0)
    with pytest.raises(InvalidArgument):
        await driver.job_delete_many(["a", "bad\x00id"])
    assert await exists(driver, "a")  # checked before the first write
