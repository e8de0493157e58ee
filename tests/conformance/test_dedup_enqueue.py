"""``enqueue(..., dedup=...)`` on every backend, with a fake clock: the default key (the job's
name and payload), what the handle says, and the modes through Queue, SyncQueue and
``enqueue_many``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pydantic import BaseModel

from conveyor import (
    Debounce,
    FakeClock,
    InsertStatus,
    InvalidArgument,
    JobState,
    Queue,
    SyncQueue,
    Throttle,
    UntilFinished,
    UntilStarted,
    job,
)
from conveyor.backends.registry import driver_for_url
from conveyor.drivers.records import FetchParams, PurgeParams

T0 = 1_700_000_000.0


class Reindex(BaseModel):
    doc_id: int
    reason: str = "edit"


reindex = job("search.reindex", Reindex)
other = job("search.other", Reindex)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def queue(backend_url: str, clock: FakeClock) -> AsyncIterator[Queue]:
    async with Queue(driver_for_url(backend_url), clock=clock) as q:
        yield q


async def start_next(queue: Queue, clock: FakeClock) -> str:
    """What a worker does first with the next runnable job: lease it (it has started)."""
    params = FetchParams(("default",), 1, "worker-1", 30.0)
    [leased] = await queue.driver.job_fetch(params, now=clock.now())
    return leased.id


async def test_the_same_job_with_the_same_arguments_is_a_duplicate(queue: Queue) -> None:
    first = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=UntilStarted())
    again = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=UntilStarted())
    assert (first.outcome, first.duplicate) == (InsertStatus.INSERTED, False)
    assert (again.id, again.outcome, again.duplicate) == (first.id, InsertStatus.DUPLICATE, True)
    assert "duplicate" in repr(again)
    changed = await queue.enqueue(reindex, Reindex(doc_id=8), dedup=UntilStarted())
    other_job = await queue.enqueue(other, Reindex(doc_id=7), dedup=UntilStarted())
    assert changed.outcome is other_job.outcome is InsertStatus.INSERTED
    assert len({first.id, changed.id, other_job.id}) == 3
    assert len(await queue.list_jobs()) == 3


async def test_the_default_key_reads_the_payload_not_its_layout(queue: Queue) -> None:
    first = await queue.enqueue_by_name("search.reindex", b'{"doc_id": 7, "reason": "edit"}')
    typed = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=UntilFinished())
    same = await queue.enqueue(reindex, Reindex(reason="edit", doc_id=7), dedup=UntilFinished())
    assert typed.id != first.id  # a job enqueued without a key holds none
    assert (same.id, same.outcome) == (typed.id, InsertStatus.DUPLICATE)


async def test_a_given_key_is_shared_by_any_payload(queue: Queue, clock: FakeClock) -> None:
    first = await queue.enqueue(reindex, Reindex(doc_id=1), dedup=UntilStarted(key="all"))
    second = await queue.enqueue(reindex, Reindex(doc_id=2), dedup=UntilStarted(key="all"))
    assert second.id == first.id
    assert await start_next(queue, clock) == first.id
    third = await queue.enqueue(reindex, Reindex(doc_id=3), dedup=UntilStarted(key="all"))
    assert third.outcome is InsertStatus.INSERTED


async def test_throttle_lets_one_job_a_window_through(queue: Queue, clock: FakeClock) -> None:
    window = Throttle(timedelta(minutes=1))
    first = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=window)
    clock.advance(59)
    assert (await queue.enqueue(reindex, Reindex(doc_id=7), dedup=window)).id == first.id
    clock.advance(1)
    later = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=window)
    assert (later.outcome, later.id != first.id) == (InsertStatus.INSERTED, True)


async def test_debounce_runs_once_with_the_last_payload(queue: Queue, clock: FakeClock) -> None:
    settle = Debounce(timedelta(seconds=10), key="reindex:7")
    first = await queue.enqueue(reindex, Reindex(doc_id=7, reason="a"), dedup=settle)
    clock.advance(6)
    second = await queue.enqueue(reindex, Reindex(doc_id=7, reason="b"), dedup=settle)
    assert (second.id, second.outcome, second.duplicate) == (
        first.id,
        InsertStatus.REPLACED,
        True,
    )
    info = await first.info()
    assert (info.state, info.run_at.timestamp(), info.payload) == (
        JobState.SCHEDULED,
        T0 + 16,
        {"doc_id": 7, "reason": "b"},
    )
    clock.advance(10)
    assert await start_next(queue, clock) == first.id


async def test_debounce_with_a_fixed_id_replaces(queue: Queue, clock: FakeClock) -> None:
    # The example: the id names the job, the debounce says when it runs.
    settle = Debounce(timedelta(seconds=10))
    first = await queue.enqueue(reindex, Reindex(doc_id=7), job_id="reindex:7", dedup=settle)
    clock.advance(3)
    again = await queue.enqueue(reindex, Reindex(doc_id=7), job_id="reindex:7", dedup=settle)
    assert (first.id, again.id, again.outcome) == ("reindex:7", "reindex:7", InsertStatus.REPLACED)
    assert (await again.info()).run_at.timestamp() == T0 + 13


async def test_enqueue_many_acts_as_one_enqueue_after_another(queue: Queue) -> None:
    handles = await queue.enqueue_many(
        [
            reindex.request(Reindex(doc_id=1), dedup=UntilFinished()),
            reindex.request(Reindex(doc_id=1), dedup=UntilFinished()),
            reindex.request(Reindex(doc_id=2), dedup=UntilFinished()),
            reindex.request(Reindex(doc_id=3)),
        ]
    )
    assert [h.outcome for h in handles] == [
        InsertStatus.INSERTED,
        InsertStatus.DUPLICATE,
        InsertStatus.INSERTED,
        InsertStatus.INSERTED,
    ]
    assert handles[1].id == handles[0].id


async def test_a_purged_holder_frees_the_key(queue: Queue, clock: FakeClock) -> None:
    first = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=Throttle(3600))
    await first.cancel()
    assert (await queue.enqueue(reindex, Reindex(doc_id=7), dedup=Throttle(3600))).duplicate
    await queue.driver.job_purge(PurgeParams(states=(JobState.CANCELLED,)), now=clock.now())
    again = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=Throttle(3600))
    assert again.outcome is InsertStatus.INSERTED


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dedup": Debounce(10), "delay": 5}, "pass no delay or run_at"),
        ({"dedup": "until_started"}, "dedup must be UntilStarted"),
        ({"dedup": Throttle(60, key="k"), "job_id": "\x00"}, "invalid job_id"),
    ],
)
async def test_bad_dedup_arguments_write_nothing(
    queue: Queue, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await queue.enqueue_many(
            [
                reindex.request(Reindex(doc_id=1), dedup=UntilStarted()),
                reindex.request(Reindex(doc_id=2), **options),  # type: ignore[arg-type]
            ]
        )
    assert await queue.list_jobs() == []


async def test_sync_queue_enqueue_takes_dedup(backend_url: str, clock: FakeClock) -> None:
    def produce() -> tuple[str, str, InsertStatus | None]:
        with SyncQueue(Queue(driver_for_url(backend_url), clock=clock)) as sync:
            first = sync.enqueue(reindex, Reindex(doc_id=7), dedup=UntilStarted())
            again = sync.enqueue(reindex, Reindex(doc_id=7), dedup=UntilStarted())
            return first.id, again.id, again.outcome

    first_id, again_id, outcome = await asyncio.to_thread(produce)
    assert (again_id, outcome) == (first_id, InsertStatus.DUPLICATE)


async def test_an_untyped_producer_has_the_same_dedup_and_retention(queue: Queue) -> None:
    # enqueue_by_name (another service's producer) keys a job as a typed enqueue of the same
    # name and payload does, however its JSON is laid out, and carries its retention.
    typed = await queue.enqueue(reindex, Reindex(doc_id=7), dedup=UntilStarted())
    untyped = await queue.enqueue_by_name(
        "search.reindex",
        '{"reason": "edit", "doc_id": 7}',
        queue="default",
        dedup=UntilStarted(),
        keep_completed=timedelta(hours=1),
    )
    assert (untyped.id, untyped.outcome) == (typed.id, InsertStatus.DUPLICATE)
    fresh = await queue.enqueue_by_name(
        "search.reindex",
        {"doc_id": 8},
        queue="default",
        dedup=Throttle(60),
        keep_completed=timedelta(hours=1),
        keep_failed=0,
    )
    assert fresh.outcome is InsertStatus.INSERTED
    stored = await queue.driver.job_get_many([fresh.id])
    assert stored[0] is not None
    assert (stored[0].keep_completed, stored[0].keep_failed) == (3600.0, 0.0)
    with pytest.raises(InvalidArgument, match="dedup must be"):
        await queue.enqueue_by_name("search.reindex", {"doc_id": 9}, dedup="yes")  # type: ignore[arg-type]
