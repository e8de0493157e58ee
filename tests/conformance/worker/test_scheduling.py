"""Which job runs when: priority, delays, deduplication, paused queues."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor import FakeClock, JobContext, JobState, Queue, job
from tests.conformance.worker.helpers import (
    Harness,
    Num,
    add_probe,
    probe_round,
    wait_for,
    wait_state,
)

record = job("test.record", Num)
other_queue_job = job("test.other_queue", Num, queue="other")


async def test_lower_priority_runs_first_and_fifo_within_a_priority(
    harness: Harness, queue: Queue
) -> None:
    order: list[int] = []
    worker = harness.worker(concurrency=1)

    @worker.handles(record)
    async def handle(payload: Num, ctx: JobContext) -> None:
        order.append(payload.n)

    priorities = [5, 1, 3, 1, 0, 3, -2, 1]
    for n, priority in enumerate(priorities):
        await queue.enqueue(record, Num(n=n), priority=priority)
    harness.start(worker)

    await wait_for(lambda: len(order) == len(priorities))
    expected = [n for n, _ in sorted(enumerate(priorities), key=lambda item: (item[1], item[0]))]
    assert order == expected == [6, 4, 1, 3, 7, 2, 5, 0]


async def test_the_definition_priority_is_the_default(harness: Harness, queue: Queue) -> None:
    urgent = job("test.urgent", Num, priority=-10)
    order: list[str] = []
    worker = harness.worker(concurrency=1)

    @worker.handles(record)
    async def handle(payload: Num, ctx: JobContext) -> None:
        order.append("record")

    @worker.handles(urgent)
    async def handle_urgent(payload: Num, ctx: JobContext) -> None:
        order.append("urgent")

    await queue.enqueue(record, Num(n=1))
    await queue.enqueue(urgent, Num(n=2))
    harness.start(worker)
    await wait_for(lambda: len(order) == 2)
    assert order == ["urgent", "record"]


async def test_a_delayed_job_waits_for_its_time(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    ran: list[int] = []
    worker = harness.worker()
    add_probe(worker)

    @worker.handles(record)
    async def handle(payload: Num, ctx: JobContext) -> None:
        ran.append(payload.n)

    delayed = await queue.enqueue(record, Num(n=1), delay=timedelta(minutes=5))
    at = await queue.enqueue(
        record,
        Num(n=2),
        run_at=datetime.fromtimestamp(clock.now(), tz=UTC) + timedelta(minutes=10),
    )
    assert (await delayed.info()).state is JobState.SCHEDULED
    assert (await at.info()).state is JobState.SCHEDULED
    harness.start(worker)

    await probe_round(queue)
    clock.advance(299)
    await probe_round(queue)
    assert ran == []
    assert (await delayed.info()).state is JobState.SCHEDULED

    clock.advance(2)
    await wait_state(queue, delayed.id, JobState.COMPLETED)
    assert ran == [1]
    assert (await at.info()).state is JobState.SCHEDULED

    clock.advance(300)
    await wait_state(queue, at.id, JobState.COMPLETED)
    assert ran == [1, 2]


async def test_same_job_id_runs_once(harness: Harness, queue: Queue) -> None:
    calls: list[int] = []
    worker = harness.worker()

    @worker.handles(record)
    async def handle(payload: Num, ctx: JobContext) -> None:
        calls.append(payload.n)

    first = await queue.enqueue(record, Num(n=1), job_id="invite-email:42")
    second = await queue.enqueue(record, Num(n=2), job_id="invite-email:42")
    assert first.id == second.id == "invite-email:42"
    assert first.duplicate is False
    assert second.duplicate is True

    harness.start(worker)
    await second.result(timeout=10)
    third = await queue.enqueue(record, Num(n=3), job_id="invite-email:42")
    assert third.duplicate is True
    await wait_state(queue, first.id, JobState.COMPLETED)
    assert calls == [1]
    assert (await queue.get("invite-email:42")) is not None
    assert sum((await queue.counts()).values()) == 1


async def test_a_paused_queue_is_not_worked_until_resumed(harness: Harness, queue: Queue) -> None:
    ran: list[str] = []
    worker = harness.worker(queues=["default", "other"])
    add_probe(worker)

    @worker.handles(record)
    async def handle(payload: Num, ctx: JobContext) -> None:
        ran.append("default")

    @worker.handles(other_queue_job)
    async def handle_other(payload: Num, ctx: JobContext) -> None:
        ran.append("other")

    await queue.pause("default")
    paused = await queue.enqueue(record, Num(n=1))
    harness.start(worker)
    other = await queue.enqueue(other_queue_job, Num(n=2))
    await wait_state(queue, other.id, JobState.COMPLETED)
    await probe_round(queue, queue_name="other")
    assert ran == ["other"]
    assert (await paused.info()).state is JobState.QUEUED
    assert {q.name: q.paused for q in await queue.queues()}["default"] is True

    await queue.resume("default")
    await wait_state(queue, paused.id, JobState.COMPLETED)
    assert ran == ["other", "default"]
