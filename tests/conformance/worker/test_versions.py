"""Payload versions across a rolling deploy, on every backend: a job enqueued by an older version
of its definition is upgraded by a newer worker; a job of a newer version is handed back by an
older worker, without spending an attempt, until a worker that can read it comes."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from conveyor import FakeClock, JobContext, JobState, Queue, job
from conveyor.core.versions import VERSION_HEADER
from tests.conformance.worker.helpers import Harness, get_info, wait_for, wait_state


class ContactV1(BaseModel):
    name: str


class ContactV2(BaseModel):
    first_name: str
    last_name: str


def split_name(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


# The same job, as the old code and the new code declare it.
greet_v1 = job("test.greet", ContactV1, result=str)
greet_v2 = job("test.greet", ContactV2, result=str, version=2, upgrade=split_name)


def serve_v1(harness: Harness, **config: Any) -> Any:
    worker = harness.worker(**config)

    @worker.handles(greet_v1)
    async def greet(payload: ContactV1, ctx: JobContext) -> str:
        return f"v1 {payload.name}"

    return worker


def serve_v2(harness: Harness, **config: Any) -> Any:
    worker = harness.worker(**config)

    @worker.handles(greet_v2)
    async def greet(payload: ContactV2, ctx: JobContext) -> str:
        return f"v2 {payload.first_name}/{payload.last_name}"

    return worker


async def test_a_job_enqueued_by_the_old_definition_runs_on_the_new_worker(
    harness: Harness, queue: Queue
) -> None:
    old = await queue.enqueue(greet_v1, ContactV1(name="Ada Lovelace"))
    new = await queue.enqueue(greet_v2, ContactV2(first_name="Alan", last_name="Turing"))
    assert (await get_info(queue, old.id)).headers.get(VERSION_HEADER) is None  # v1: nothing
    assert (await get_info(queue, new.id)).headers[VERSION_HEADER] == "2"
    # By name: the payload is of version 1 unless the producer says which version it wrote.
    by_name_old = await queue.enqueue_by_name("test.greet", {"name": "Grace Hopper"})
    by_name_new = await queue.enqueue_by_name(
        "test.greet", {"first_name": "Edsger", "last_name": "Dijkstra"}, version=2
    )
    harness.start(serve_v2(harness))
    assert await old.result(timeout=10) == "v2 Ada/Lovelace"
    assert await new.result(timeout=10) == "v2 Alan/Turing"  # the current shape: not upgraded
    assert await by_name_old.result(timeout=10) == "v2 Grace/Hopper"
    assert await by_name_new.result(timeout=10) == "v2 Edsger/Dijkstra"
    for handle in (old, new, by_name_old, by_name_new):
        info = await get_info(queue, handle.id)
        assert (info.attempt, info.errors) == (1, ())


async def test_an_upgrade_that_fails_fails_only_its_job_for_good(
    harness: Harness, queue: Queue
) -> None:
    def no_surname(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        if " " not in data["name"]:
            raise ValueError(f"cannot split {data['name']!r}")
        return split_name(from_version, data)

    strict = job("test.greet", ContactV2, result=str, version=2, upgrade=no_surname)
    worker = harness.worker()

    @worker.handles(strict)
    async def greet(payload: ContactV2, ctx: JobContext) -> str:
        return payload.first_name

    harness.start(worker)
    bad = await queue.enqueue(greet_v1, ContactV1(name="Plato"))
    good = await queue.enqueue(greet_v1, ContactV1(name="Ada Lovelace"))
    info = await wait_state(queue, bad.id, JobState.FAILED)
    assert info.attempt == 1  # of 3: an upgrade that failed once fails again
    assert info.error is not None and info.error.startswith("PayloadValidationError")
    assert "'test.greet'" in info.error and "cannot split 'Plato'" in info.error
    assert "version 1 to version 2" in info.error
    assert await good.result(timeout=10) == "Ada"


async def test_an_old_worker_hands_a_newer_job_back_until_a_new_worker_runs_it(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    old = serve_v1(harness)
    harness.start(old)
    newer = await queue.enqueue(greet_v2, ContactV2(first_name="Ada", last_name="Lovelace"))
    info = await wait_state(queue, newer.id, JobState.SCHEDULED)
    assert info.attempt == 0  # the attempt was given back
    assert info.error is not None and info.error.startswith("NewerJobVersion:")
    assert "version 2" in info.error and "has version 1" in info.error
    # Old jobs still run on the old worker meanwhile.
    plain = await queue.enqueue(greet_v1, ContactV1(name="Grace"))
    assert await plain.result(timeout=10) == "v1 Grace"
    await harness.stop(old)
    harness.start(serve_v2(harness))
    clock.advance(600)  # past the hand-back's delay
    assert await newer.result(timeout=10) == "v2 Ada/Lovelace"
    info = await get_info(queue, newer.id)
    assert info.attempt == 1 and len(info.errors) == 1


async def test_a_newer_job_no_worker_can_read_fails_only_after_the_grace_period(
    harness: Harness, queue: Queue, clock: FakeClock
) -> None:
    harness.start(serve_v1(harness))
    newer = await queue.enqueue(greet_v2, ContactV2(first_name="Ada", last_name="Lovelace"))
    info = await wait_state(queue, newer.id, JobState.SCHEDULED)
    hand_backs = 1
    while True:  # each hand-back waits longer: 10 s, 20 s, 40 s ... 10 min
        clock.advance(600)
        info = await wait_state(queue, newer.id, JobState.SCHEDULED, JobState.FAILED)
        if info.state is JobState.FAILED:
            break
        hand_backs += 1
        await wait_for(
            functools.partial(_history_length, queue, newer.id, hand_backs),
            what="another hand-back",
        )
    assert 5 <= hand_backs <= 15
    assert info.attempt == 1
    assert info.error is not None and info.error.startswith("NewerJobVersion:")
    assert "no worker that fetched it in the last 60 minutes had that version" in info.error


async def _history_length(queue: Queue, job_id: str, n: int) -> bool:
    info = await queue.get(job_id)
    return info is not None and len(info.errors) >= n


async def test_a_hook_gets_the_upgraded_payload_of_an_old_job(
    harness: Harness, queue: Queue
) -> None:
    from conveyor import JobEvent, Permanent

    events: list[JobEvent[ContactV2]] = []
    worker = harness.worker()

    @worker.handles(greet_v2)
    async def greet(payload: ContactV2, ctx: JobContext) -> str:
        raise Permanent(f"no greeting for {payload.first_name}")

    @worker.on_dead(greet_v2)
    async def dead(event: JobEvent[ContactV2]) -> None:
        events.append(event)

    harness.start(worker)
    old = await queue.enqueue(greet_v1, ContactV1(name="Ada Lovelace"))
    await wait_state(queue, old.id, JobState.FAILED)
    [event] = await wait_for(lambda: events, what="the dead hook")
    assert event.payload == ContactV2(first_name="Ada", last_name="Lovelace")
    assert event.payload_json == b'{"name":"Ada Lovelace"}'  # as stored
