"""Payload validation on both sides of the queue: at enqueue (nothing written) and at dequeue
(the job fails permanently, the worker carries on)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from conveyor import (
    FakeClock,
    JobContext,
    JobState,
    PayloadTooLarge,
    PayloadValidationError,
    Queue,
    Worker,
    job,
)
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import WorkerInfo
from tests.conformance.worker.helpers import (
    Harness,
    Num,
    Text,
    get_info,
    total_jobs,
    wait_for,
    wait_state,
)

count = job("test.count", Num, result=int, attempts=3)
echo = job("test.echo", Text, result=str)
fresh = job("test.fresh_kind", Num, result=int, attempts=1)


async def test_invalid_stored_payload_fails_permanently_and_the_worker_continues(
    harness: Harness, queue: Queue
) -> None:
    calls: list[int] = []
    worker = harness.worker()

    @worker.handles(count)
    async def handle(payload: Num, ctx: JobContext) -> int:
        calls.append(payload.n)
        return payload.n

    harness.start(worker)
    bad = await queue.enqueue_by_name("test.count", {"n": "not a number"})
    info = await wait_state(queue, bad.id, JobState.FAILED)
    assert info.attempt == 1  # no retries: the payload will not get any better
    assert info.error is not None
    assert info.error.startswith("PayloadValidationError")
    assert "'test.count'" in info.error
    assert "n:" in info.error
    assert calls == []

    missing = await queue.enqueue_by_name("test.count", {"m": 1})
    info = await wait_state(queue, missing.id, JobState.FAILED)
    assert info.error is not None and "n:" in info.error

    good = await queue.enqueue(count, Num(n=5))
    assert await good.result(timeout=10) == 5
    assert calls == [5]


async def test_untyped_producer_with_a_valid_payload_is_handled(
    harness: Harness, queue: Queue
) -> None:
    worker = harness.worker()

    @worker.handles(echo)
    async def handle(payload: Text, ctx: JobContext) -> str:
        return payload.text.upper()

    harness.start(worker)
    by_dict = await queue.enqueue_by_name("test.echo", {"text": "hi"})
    by_text = await queue.enqueue_by_name("test.echo", '{"text": "there"}')
    by_bytes = await queue.enqueue_by_name("test.echo", b'{"text": "you"}')
    assert by_dict.duplicate is False
    assert await by_dict.result(timeout=10) == "HI"  # untyped handle: the decoded JSON
    assert await by_text.result(timeout=10) == "THERE"
    assert await by_bytes.result(timeout=10) == "YOU"
    typed = queue.handle(echo, by_dict.id)
    assert await typed.result(timeout=10) == "HI"


async def test_a_job_no_worker_knows_never_spends_an_attempt_and_fails_after_an_hour(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    """Rolling deploys: a new job kind enqueued before every worker has the new code must not go
    straight to the dead-letter set. A backend that filters by name never hands it to a worker
    that cannot run it; any other hands it back with a growing delay, without using an attempt,
    and fails it with UnknownJob only after an hour."""
    worker = harness.worker()

    @worker.handles(count)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n

    harness.start(worker)
    unknown = await queue.enqueue_by_name("billing.charge_card", {"amount": 10}, queue="default")
    good = await queue.enqueue(count, Num(n=1))
    assert await good.result(timeout=10) == 1  # the worker goes on
    if Capability.FETCH_BY_NAME in queue.driver.capabilities:
        # Never handed to a worker that cannot run it, until it has waited an hour for one.
        clock.advance(3599)
        await probe_after(queue)
        info = await get_info(queue, unknown.id)
        assert (info.state, info.attempt, info.errors) == (JobState.QUEUED, 0, ())
        clock.advance(1)
        info = await wait_state(queue, unknown.id, JobState.FAILED)
        assert info.attempt == 1
        assert info.error is not None and info.error.startswith("UnknownJob:")
        assert "no worker that fetched it" in info.error
        return
    info = await wait_state(queue, unknown.id, JobState.SCHEDULED)
    assert info.attempt == 0
    assert info.error is not None and info.error.startswith("UnknownJob:")
    assert "'billing.charge_card'" in info.error and "test.count" in info.error
    hand_backs = 1
    while True:  # each hand-back waits longer: 10 s, 20 s, 40 s ... 10 min
        clock.advance(600)
        info = await wait_state(queue, unknown.id, JobState.SCHEDULED, JobState.FAILED)
        if info.state is JobState.FAILED:
            break
        hand_backs += 1
        await wait_for(
            functools.partial(_history_length, queue, unknown.id, hand_backs),
            what="another hand-back",
        )
    assert 5 <= hand_backs <= 15
    assert info.attempt == 1
    assert info.error is not None and "no worker that fetched it" in info.error


async def _history_length(queue: Queue, job_id: str, n: int) -> bool:
    info = await queue.get(job_id)
    return info is not None and len(info.errors) >= n


async def _completed_or_handed_back(queue: Queue, job_id: str, seen: int) -> bool:
    info = await get_info(queue, job_id)
    return info.state is JobState.COMPLETED or len(info.errors) > seen


async def probe_after(queue: Queue) -> None:
    later = await queue.enqueue(count, Num(n=2))
    assert await later.result(timeout=10) == 2


async def test_a_new_job_kind_runs_once_a_worker_that_knows_it_arrives(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    old = harness.worker(concurrency=1)

    @old.handles(count)
    async def handle_old(payload: Num, ctx: JobContext) -> int:
        return payload.n

    harness.start(old)
    handle = await queue.enqueue(fresh, Num(n=3))
    await probe_after(queue)
    new = harness.worker(concurrency=1)

    @new.handles(fresh)
    async def handle_new(payload: Num, ctx: JobContext) -> int:
        return payload.n * 10

    harness.start(new)
    # Where the backend cannot filter by name, the old worker may win the race for the job
    # again and hand it back once more (each time for longer): time goes on until the new
    # worker gets it, which it does within a few hand-backs.
    for _ in range(12):
        seen = len((await get_info(queue, handle.id)).errors)
        clock.advance(600)  # past the longest hand-back delay
        await wait_for(
            functools.partial(_completed_or_handed_back, queue, handle.id, seen),
            what="the job to run or be handed back again",
        )
        if (await get_info(queue, handle.id)).state is JobState.COMPLETED:
            break
    assert await handle.result(timeout=10) == 30
    info = await handle.info()
    assert info.attempt == 1  # handing back used no attempt


async def test_oversized_payload_is_refused_at_enqueue_and_nothing_is_written(
    backend_url: str, clock: FakeClock
) -> None:
    async with Queue.from_url(backend_url, clock=clock, max_payload_bytes=64) as small:
        big = Text(text="x" * 100)
        with pytest.raises(PayloadTooLarge) as info:
            await small.enqueue(echo, big)
        assert info.value.job_name == "test.echo"
        assert info.value.limit == 64
        assert info.value.size > 100

        with pytest.raises(PayloadTooLarge):
            await small.enqueue_many([echo.request(Text(text="ok")), echo.request(big)])
        with pytest.raises(PayloadTooLarge):
            await small.enqueue_by_name("test.echo", {"text": "y" * 100})
        assert await total_jobs(small) == 0

        fits = await small.enqueue(echo, Text(text="ok"))
        assert (await fits.info()).state is JobState.QUEUED
        assert await total_jobs(small) == 1


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_invalid_payload_at_enqueue_raises_and_writes_nothing(queue: Queue) -> None:
    wrong_model: Any = Text(text="wrong model")
    with pytest.raises(PayloadValidationError) as info:
        await queue.enqueue(count, wrong_model)
    assert info.value.job_name == "test.count"

    unvalidated = Num.model_construct(n="seven")
    with pytest.raises(PayloadValidationError) as info:
        await queue.enqueue(count, unvalidated)
    assert "n" in info.value.detail

    with pytest.raises(PayloadValidationError):
        await queue.enqueue_many([count.request(Num(n=1)), count.request(unvalidated)])
    with pytest.raises(PayloadValidationError, match="JSON"):
        await queue.enqueue_by_name("test.count", "{not json")
    with pytest.raises(PayloadValidationError, match="JSON object"):
        await queue.enqueue_by_name("test.count", "[1, 2, 3]")
    assert await total_jobs(queue) == 0


charge = job("billing.charge_card", Num, result=int)


async def test_a_job_a_live_worker_knows_is_never_failed_as_unknown_by_another(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    """Two fleets share a queue, each with its own job names; the billing fleet is over an
    hour behind. Before: a worker of the other fleet got the waiting billing job (at once, or
    after an hour on a backend that filters by name) and failed it as unknown within the hour.
    Workers now publish the names they serve, and a job a live worker knows is handed back."""
    billing_fleet = WorkerInfo(
        "billing-1", "host-b", 1, ("default",), 1, clock.now(), names=(charge.name,)
    )
    await queue.driver.worker_heartbeat(billing_fleet, ttl=10**6, now=clock.now())
    worker = harness.worker()

    @worker.handles(count)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n

    harness.start(worker)
    await wait_for(
        lambda: _knows_elsewhere(worker, charge.name), what="the heartbeat to see the fleet"
    )
    waiting = await queue.enqueue(charge, Num(n=5))
    await probe_after(queue)
    for _ in range(9):  # an hour and a half
        clock.advance(600)
        await probe_after(queue)
    # The probe can finish before the hand-back of the job fetched beside it is written.
    info = await wait_state(queue, waiting.id, JobState.QUEUED, JobState.SCHEDULED)
    assert info.attempt == 0
    if info.errors:  # handed back (a backend that does not filter, or after the hour)
        assert "a live worker of queue 'default' has one" in info.errors[-1].error
    # The fleet catches up. The first worker stops first: were it to fetch the job again
    # once it falls due, its hand-back (600 s by now) would outlast this test.
    await harness.stop(worker)
    billing = harness.worker()

    @billing.handles(charge)
    async def charge_card(payload: Num, ctx: JobContext) -> int:
        return payload.n

    harness.start(billing)
    clock.advance(600)
    assert await waiting.result(timeout=10) == 5


async def _knows_elsewhere(worker: Worker, name: str) -> bool:
    runner = worker._runner  # pyright: ignore[reportPrivateUsage]
    return runner is not None and name in runner.known_elsewhere.get("default", ())
