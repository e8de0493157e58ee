"""job_insert_many: new jobs, delays, and deduplication by id."""

from __future__ import annotations

from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import InsertResult, InsertStatus, JobState

from ._support import QUEUE, T0, fetch_one, get, new_job


async def test_inserted_job_is_queued_with_its_fields(driver: Driver) -> None:
    job = new_job("a", name="email.send", payload=b'{"to": "x"}', priority=4, max_attempts=7)
    assert await driver.job_insert_many([job], now=T0) == [
        InsertResult("a", InsertStatus.INSERTED, JobState.QUEUED)
    ]
    stored = await get(driver, "a")
    assert (stored.queue, stored.name, stored.payload) == (QUEUE, "email.send", b'{"to": "x"}')
    assert (stored.state, stored.priority, stored.max_attempts) == (JobState.QUEUED, 4, 7)
    assert (stored.attempt, stored.stalls, stored.cancel_requested) == (0, 0, False)
    assert stored.run_at == T0 and stored.enqueued_at == T0
    assert stored.lease_token is None and stored.finished_at is None and stored.result is None


async def test_delay_schedules_the_job_relative_to_now(driver: Driver) -> None:
    [result] = await driver.job_insert_many([new_job("a", delay=60)], now=T0)
    assert result.state is JobState.SCHEDULED
    assert (await get(driver, "a")).run_at == T0 + 60


async def test_explicit_run_at_in_the_future_schedules_and_in_the_past_queues(
    driver: Driver,
) -> None:
    results = await driver.job_insert_many(
        [new_job("later", run_at=T0 + 5), new_job("earlier", run_at=T0 - 5)], now=T0
    )
    assert [r.state for r in results] == [JobState.SCHEDULED, JobState.QUEUED]
    assert (await get(driver, "earlier")).run_at == T0 - 5


async def test_duplicate_id_returns_the_existing_job_and_overwrites_nothing(
    driver: Driver,
) -> None:
    await driver.job_insert_many([new_job("a", payload=b"1", priority=1)], now=T0)
    before = await get(driver, "a")
    results = await driver.job_insert_many(
        [new_job("a", queue="other", payload=b"2", priority=9, delay=100)], now=T0 + 1
    )
    assert results == [InsertResult("a", InsertStatus.DUPLICATE, JobState.QUEUED)]
    assert await get(driver, "a") == before


async def test_duplicate_reports_the_current_state_of_the_existing_job(driver: Driver) -> None:
    await driver.job_insert_many([new_job("a")], now=T0)
    await fetch_one(driver)
    [result] = await driver.job_insert_many([new_job("a")], now=T0)
    assert result == InsertResult("a", InsertStatus.DUPLICATE, JobState.ACTIVE)


async def test_duplicates_inside_one_batch_keep_the_first(driver: Driver) -> None:
    results = await driver.job_insert_many(
        [new_job("a", payload=b"first"), new_job("b"), new_job("a", payload=b"second")], now=T0
    )
    assert [r.status for r in results] == [
        InsertStatus.INSERTED,
        InsertStatus.INSERTED,
        InsertStatus.DUPLICATE,
    ]
    assert (await get(driver, "a")).payload == b"first"


async def test_seq_increases_in_insert_order(driver: Driver) -> None:
    await driver.job_insert_many([new_job("a"), new_job("b")], now=T0)
    await driver.job_insert_many([new_job("c")], now=T0)
    seqs = [(await get(driver, i)).seq for i in ("a", "b", "c")]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_empty_batch_is_a_no_op(driver: Driver) -> None:
    assert await driver.job_insert_many([], now=T0) == []
    assert sum((await driver.job_count_by_state()).values()) == 0


async def test_insert_makes_the_queue_known(driver: Driver) -> None:
    await driver.job_insert_many([new_job("a", queue="mail")], now=T0)
    assert [q.name for q in await driver.queue_list()] == ["mail"]


async def test_enqueueing_into_a_queue_makes_it_known_even_if_every_job_was_a_duplicate(
    driver: Driver,
) -> None:
    await driver.job_insert_many([new_job("a", queue="mail")], now=T0)
    [result] = await driver.job_insert_many([new_job("a", queue="other")], now=T0)
    assert result.status is InsertStatus.DUPLICATE
    assert [q.name for q in await driver.queue_list()] == ["mail", "other"]


async def test_a_batch_with_an_unstorable_time_writes_nothing(driver: Driver) -> None:
    import pytest

    from conveyor._errors import InvalidArgument

    bad = [new_job("ok"), new_job("nan", run_at=float("nan"))]
    with pytest.raises(InvalidArgument, match="'nan'"):
        await driver.job_insert_many(bad, now=T0)
    with pytest.raises(InvalidArgument, match="'inf'"):
        await driver.job_insert_many([new_job("ok"), new_job("inf", delay=float("inf"))], now=T0)
    assert await driver.job_get_many(["ok", "nan", "inf"]) == [None, None, None]
