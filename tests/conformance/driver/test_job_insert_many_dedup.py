"""job_insert_many with dedup keys: each mode's rule of when a key is held, decided at the next
insert with that key from the holder job as it is then (see conveyor.drivers.common)."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor import InvalidArgument
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    Dedup,
    DedupMode,
    InsertResult,
    InsertStatus,
    JobState,
    NewJob,
    PurgeParams,
    Retention,
    TransitionKind,
)

from ._support import T0, exists, fetch, fetch_one, finish, get, new_job

INSERTED, DUPLICATE, REPLACED = InsertStatus.INSERTED, InsertStatus.DUPLICATE, InsertStatus.REPLACED


def keyed(
    job_id: str,
    mode: DedupMode,
    *,
    key: str = "k",
    seconds: float = 0.0,
    delay: float = 0.0,
    **options: object,
) -> NewJob:
    job = new_job(job_id, delay=delay, **options)  # type: ignore[arg-type]
    return dataclasses.replace(job, dedup=Dedup(mode, key, seconds))


async def put(driver: Driver, job: NewJob, now: float = T0) -> InsertResult:
    [result] = await driver.job_insert_many([job], now=now)
    return result


async def test_until_started_holds_the_key_while_the_holder_waits(driver: Driver) -> None:
    mode = DedupMode.UNTIL_STARTED
    assert await put(driver, keyed("a", mode)) == InsertResult("a", INSERTED, JobState.QUEUED)
    assert await put(driver, keyed("b", mode, payload=b'{"n": 2}')) == InsertResult(
        "a", DUPLICATE, JobState.QUEUED
    )
    assert not await exists(driver, "b")
    assert (await get(driver, "a")).payload == b'{"n": 1}'
    await fetch_one(driver)  # started: the key is free, though the job is not finished
    assert await put(driver, keyed("c", mode)) == InsertResult("c", INSERTED, JobState.QUEUED)
    assert (await put(driver, keyed("d", mode))).id == "c"


async def test_until_started_frees_the_key_of_a_started_job_waiting_for_a_retry(
    driver: Driver,
) -> None:
    mode = DedupMode.UNTIL_STARTED
    await put(driver, keyed("a", mode, delay=60))
    assert (await put(driver, keyed("b", mode))).status is DUPLICATE  # scheduled holds it too
    job = await fetch_one(driver, now=T0 + 60)
    await finish(driver, job, TransitionKind.RETRY, error="boom", delay=300, now=T0 + 61)
    assert (await get(driver, "a")).state is JobState.RETRYING
    assert (await put(driver, keyed("c", mode), now=T0 + 62)).status is INSERTED


async def test_until_finished_holds_the_key_until_the_holder_ends(driver: Driver) -> None:
    mode = DedupMode.UNTIL_FINISHED
    await put(driver, keyed("a", mode))
    job = await fetch_one(driver)
    assert await put(driver, keyed("b", mode)) == InsertResult("a", DUPLICATE, JobState.ACTIVE)
    await finish(driver, job, TransitionKind.RETRY, error="x", delay=10, now=T0 + 1)
    assert (await put(driver, keyed("b", mode), now=T0 + 2)).status is DUPLICATE
    job = await fetch_one(driver, now=T0 + 11)
    await finish(driver, job, now=T0 + 12)
    assert await put(driver, keyed("b", mode), now=T0 + 13) == InsertResult(
        "b", INSERTED, JobState.QUEUED
    )


async def test_until_finished_key_is_free_once_the_holder_is_cancelled(driver: Driver) -> None:
    mode = DedupMode.UNTIL_FINISHED
    await put(driver, keyed("a", mode, delay=60))
    await driver.job_cancel_many(["a"], now=T0 + 1)
    assert (await put(driver, keyed("b", mode), now=T0 + 2)).status is INSERTED


async def test_throttle_holds_the_key_for_its_window_whatever_the_holder_does(
    driver: Driver,
) -> None:
    mode = DedupMode.THROTTLE
    await put(driver, keyed("a", mode, seconds=60))
    job = await fetch_one(driver, now=T0 + 1)
    await finish(driver, job, now=T0 + 2)
    assert await put(driver, keyed("b", mode, seconds=60), now=T0 + 59.5) == InsertResult(
        "a", DUPLICATE, JobState.COMPLETED
    )
    assert (await put(driver, keyed("c", mode, seconds=60), now=T0 + 60)).status is INSERTED
    assert (await put(driver, keyed("d", mode, seconds=60), now=T0 + 61)).id == "c"


async def test_debounce_replaces_the_waiting_jobs_payload_and_pushes_its_run_time_back(
    driver: Driver,
) -> None:
    mode = DedupMode.DEBOUNCE
    first = await put(driver, keyed("a", mode, delay=10, priority=3))
    assert first == InsertResult("a", INSERTED, JobState.SCHEDULED)
    before = await get(driver, "a")
    second = await put(driver, keyed("b", mode, delay=10, payload=b'{"n": 2}'), now=T0 + 7)
    assert second == InsertResult("a", REPLACED, JobState.SCHEDULED)
    after = await get(driver, "a")
    assert (after.payload, after.run_at, after.state) == (b'{"n": 2}', T0 + 17, JobState.SCHEDULED)
    assert (after.seq, after.enqueued_at, after.priority) == (before.seq, T0, 3)
    assert not await exists(driver, "b")
    assert await driver.job_count_by_state() == {
        **dict.fromkeys(JobState, 0),
        JobState.SCHEDULED: 1,
    }
    assert await fetch(driver, now=T0 + 16.9) == []
    job = await fetch_one(driver, now=T0 + 17)
    assert (job.id, job.payload) == ("a", b'{"n": 2}')


async def test_debounce_is_not_due_before_its_pushed_back_run_time(driver: Driver) -> None:
    mode = DedupMode.DEBOUNCE
    await put(driver, keyed("a", mode, delay=10))
    await put(driver, keyed("b", mode, delay=10), now=T0 + 9)
    await driver.job_promote_due(limit=10, now=T0 + 18)
    assert (await get(driver, "a")).state is JobState.SCHEDULED
    assert await driver.job_promote_due(limit=10, now=T0 + 19) == 1


async def test_debounce_once_due_the_next_enqueue_makes_a_new_job(driver: Driver) -> None:
    mode = DedupMode.DEBOUNCE
    await put(driver, keyed("a", mode, delay=10))
    assert await put(driver, keyed("b", mode, delay=10), now=T0 + 10) == InsertResult(
        "b", INSERTED, JobState.SCHEDULED
    )
    assert (await get(driver, "a")).payload == b'{"n": 1}'
    assert (await put(driver, keyed("c", mode, delay=10), now=T0 + 11)) == InsertResult(
        "b", REPLACED, JobState.SCHEDULED
    )


async def test_debounce_replaces_only_a_debounced_job_of_the_same_name(driver: Driver) -> None:
    await put(driver, keyed("a", DedupMode.DEBOUNCE, delay=10))
    other_name = keyed("b", DedupMode.DEBOUNCE, delay=10, name="other.job", payload=b"{}")
    assert await put(driver, other_name, now=T0 + 1) == InsertResult(
        "a", DUPLICATE, JobState.SCHEDULED
    )
    assert (await get(driver, "a")).payload == b'{"n": 1}'
    await put(driver, keyed("c", DedupMode.UNTIL_STARTED, key="s", delay=10))
    assert await put(driver, keyed("d", DedupMode.DEBOUNCE, key="s", delay=10)) == InsertResult(
        "c", DUPLICATE, JobState.SCHEDULED
    )
    # A debounced holder holds its key against other modes too; they never replace it.
    assert (await put(driver, keyed("e", DedupMode.UNTIL_FINISHED), now=T0 + 2)).id == "a"
    assert (await get(driver, "a")).run_at == T0 + 10


async def test_keys_are_scoped_to_the_queue(driver: Driver) -> None:
    mode = DedupMode.UNTIL_FINISHED
    await put(driver, keyed("a", mode))
    assert (await put(driver, keyed("b", mode, queue="other"))).status is INSERTED
    assert (await put(driver, keyed("c", mode, queue="other"))).id == "b"


async def test_a_free_key_with_an_existing_id_is_a_duplicate_of_that_id(driver: Driver) -> None:
    await put(driver, keyed("a", DedupMode.UNTIL_FINISHED, key="k1"))
    assert await put(driver, keyed("a", DedupMode.UNTIL_FINISHED, key="k2")) == InsertResult(
        "a", DUPLICATE, JobState.QUEUED
    )
    assert (await put(driver, keyed("b", DedupMode.UNTIL_FINISHED, key="k2"))).status is INSERTED
    # An id inserted without a key is not a holder of any key.
    await put(driver, new_job("plain"))
    assert (await put(driver, keyed("plain", DedupMode.UNTIL_FINISHED, key="k3"))).id == "plain"
    assert (await put(driver, keyed("c", DedupMode.UNTIL_FINISHED, key="k3"))).status is INSERTED


async def test_a_held_key_decides_before_the_id(driver: Driver) -> None:
    # enqueue(reindex, Reindex(doc_id=7), job_id="reindex:7", dedup=Debounce(...)) twice: the
    # second replaces the first, though its id exists.
    mode = DedupMode.DEBOUNCE
    await put(driver, keyed("reindex:7", mode, delay=10))
    assert await put(
        driver, keyed("reindex:7", mode, delay=10, payload=b'{"n": 2}'), now=T0 + 5
    ) == InsertResult("reindex:7", REPLACED, JobState.SCHEDULED)
    assert (await get(driver, "reindex:7")).run_at == T0 + 15
    # Once it started, the key is free, and the id makes the next one a duplicate.
    await fetch_one(driver, now=T0 + 15)
    assert await put(driver, keyed("reindex:7", mode, delay=10), now=T0 + 16) == InsertResult(
        "reindex:7", DUPLICATE, JobState.ACTIVE
    )


async def test_a_batch_acts_as_its_jobs_enqueued_one_after_another(driver: Driver) -> None:
    results = await driver.job_insert_many(
        [
            keyed("a", DedupMode.UNTIL_STARTED),
            keyed("b", DedupMode.UNTIL_STARTED),
            new_job("c"),
            keyed("d", DedupMode.DEBOUNCE, key="x", delay=5),
            keyed("e", DedupMode.DEBOUNCE, key="x", delay=9, payload=b'{"n": 5}'),
        ],
        now=T0,
    )
    assert results == [
        InsertResult("a", INSERTED, JobState.QUEUED),
        InsertResult("a", DUPLICATE, JobState.QUEUED),
        InsertResult("c", INSERTED, JobState.QUEUED),
        InsertResult("d", INSERTED, JobState.SCHEDULED),
        InsertResult("d", REPLACED, JobState.SCHEDULED),
    ]
    stored = await get(driver, "d")
    assert (stored.payload, stored.run_at) == (b'{"n": 5}', T0 + 9)
    assert not await exists(driver, "b") and not await exists(driver, "e")


async def test_a_purged_holder_frees_its_key(driver: Driver) -> None:
    mode = DedupMode.THROTTLE
    await put(driver, keyed("a", mode, seconds=3600))
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.FAIL, error="x", now=T0 + 1)
    assert (await put(driver, keyed("b", mode, seconds=3600), now=T0 + 2)).id == "a"
    assert await driver.job_purge(PurgeParams(states=(JobState.FAILED,)), now=T0 + 3) == 1
    assert (await put(driver, keyed("c", mode, seconds=3600), now=T0 + 4)).status is INSERTED


async def test_a_pruned_holder_frees_its_key(driver: Driver) -> None:
    mode = DedupMode.THROTTLE
    await put(driver, keyed("a", mode, seconds=3600))
    job = await fetch_one(driver)
    await finish(driver, job, now=T0 + 1)
    assert (await put(driver, keyed("b", mode, seconds=3600), now=T0 + 2)).id == "a"
    retention = Retention(completed_max_age=10)
    assert await driver.job_prune_finished(retention, limit=10, now=T0 + 20) == 1
    assert (await put(driver, keyed("c", mode, seconds=3600), now=T0 + 21)).status is INSERTED


async def test_a_holder_trimmed_by_retention_frees_its_key(driver: Driver) -> None:
    mode = DedupMode.THROTTLE
    await put(driver, keyed("a", mode, seconds=3600))
    await put(driver, new_job("b"))
    job = await fetch_one(driver)
    await finish(driver, job, now=T0 + 1)
    other = await fetch_one(driver, now=T0 + 2)
    await finish(driver, other, now=T0 + 3, retention=Retention(completed_max_count=1))
    assert not await exists(driver, "a")
    assert (await put(driver, keyed("c", mode, seconds=3600), now=T0 + 4)).status is INSERTED


async def test_a_later_holder_keeps_the_key_when_the_earlier_is_deleted(driver: Driver) -> None:
    mode = DedupMode.UNTIL_STARTED
    await put(driver, keyed("a", mode))
    job = await fetch_one(driver)
    await finish(driver, job, TransitionKind.FAIL, error="x", now=T0 + 1)
    assert (await put(driver, keyed("b", mode), now=T0 + 2)).status is INSERTED
    await driver.job_purge(PurgeParams(states=(JobState.FAILED,)), now=T0 + 3)
    assert (await put(driver, keyed("c", mode), now=T0 + 4)).id == "b"


@pytest.mark.parametrize(
    ("dedup", "delay", "message"),
    [
        (Dedup(DedupMode.UNTIL_STARTED, ""), 0.0, "dedup key"),
        (Dedup(DedupMode.UNTIL_STARTED, "a\x00b"), 0.0, "NUL"),
        (Dedup(DedupMode.UNTIL_STARTED, "k" * 1001), 0.0, "dedup key"),
        (Dedup(DedupMode.THROTTLE, "k", 0.0), 0.0, "throttle ttl"),
        (Dedup(DedupMode.THROTTLE, "k", float("inf")), 0.0, "throttle ttl"),
        (Dedup(DedupMode.UNTIL_FINISHED, "k", 5.0), 0.0, "only a throttle"),
        (Dedup(DedupMode.DEBOUNCE, "k"), 0.0, "debounced"),
        (Dedup("sometimes", "k"), 0.0, "unknown dedup mode"),  # type: ignore[arg-type]
    ],
)
async def test_a_bad_dedup_refuses_the_whole_batch(
    driver: Driver, dedup: Dedup, delay: float, message: str
) -> None:
    bad = dataclasses.replace(new_job("bad", delay=delay), dedup=dedup)
    with pytest.raises(InvalidArgument, match=message):
        await driver.job_insert_many([keyed("good", DedupMode.UNTIL_STARTED), bad], now=T0)
    assert not await exists(driver, "good")
    assert (await put(driver, keyed("after", DedupMode.UNTIL_STARTED))).status is INSERTED
