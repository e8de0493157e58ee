"""Queue depth and live workers come from exactly one worker of a backend, the leader; another
takes over when it stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from conveyor import Queue, Worker
from conveyor.metrics import Metrics, instrument
from tests.metrics.app import QUEUE, Work, make_worker, ok
from tests.metrics.scrape import named, samples, value


@pytest.fixture(params=["sqlite", "redis"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


def depth_of(metrics: Metrics) -> dict[str, float]:
    found = samples(metrics.url)
    return {
        labels["state"]: v
        for labels, v in named(found, "conveyor_queue_depth")
        if labels["queue"] == QUEUE
    }


def leads(metrics: Metrics) -> bool:
    found = samples(metrics.url)
    return value(found, "conveyor_metrics_leader") == 1 and bool(
        named(found, "conveyor_queue_depth")
    )


async def test_one_leader_exports_the_depth_and_another_takes_over(backend_url: str) -> None:
    producer = Queue.from_url(backend_url)
    # Jobs no worker here serves (paused queue): the depth shows them waiting.
    await producer.pause(QUEUE)
    await producer.enqueue_many([ok.request(Work(n=i)) for i in range(5)])
    workers: list[Worker] = []
    instrumented: list[Metrics] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for _ in range(2):
            worker = make_worker(Queue.from_url(backend_url), concurrency=3)
            workers.append(worker)
            instrumented.append(instrument(worker, port=0, host="127.0.0.1", depth_interval=0.2))
            tasks.append(asyncio.create_task(worker.run()))

        await wait_until(
            lambda: any(leads(m) for m in instrumented), timeout=20, what="a metrics leader"
        )
        first = next(i for i, m in enumerate(instrumented) if leads(m))
        other = 1 - first
        leader, follower = instrumented[first], instrumented[other]
        # The follower exports none of the leader-only families, for several of its ticks.
        for _ in range(5):
            found = await asyncio.to_thread(samples, follower.url)
            assert value(found, "conveyor_metrics_leader") == 0
            for family in ("conveyor_queue_depth", "conveyor_workers", "conveyor_queue_paused"):
                assert not named(found, family), family
            await asyncio.sleep(0.1)
        depth = await asyncio.to_thread(depth_of, leader)
        assert depth == {
            "scheduled": 0,
            "queued": 5,
            "active": 0,
            "retrying": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
        }
        await wait_until(
            lambda: value(samples(leader.url), "conveyor_workers", queue=QUEUE) == 2,
            timeout=20,
            what="both workers counted",
        )
        found = await asyncio.to_thread(samples, leader.url)
        assert value(found, "conveyor_worker_slots", queue=QUEUE) == 6
        assert value(found, "conveyor_queue_paused", queue=QUEUE) == 1

        # The leader stops: it lets go, and the other one exports from its next tick on.
        workers[first].stop()
        await asyncio.wait_for(tasks[first], timeout=30)
        assert not named(await asyncio.to_thread(samples, leader.url), "conveyor_queue_depth")
        await wait_until(lambda: leads(follower), timeout=20, what="the other worker to lead")
        await producer.resume(QUEUE)
        await wait_until(
            lambda: depth_of(follower).get("completed") == 5,
            timeout=30,
            what="the depth to follow the work",
        )
        assert (await asyncio.to_thread(depth_of, follower))["queued"] == 0
    finally:
        for worker in workers:
            worker.stop(grace=0)
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in instrumented:
            m.close()
        for worker in workers:
            await worker.queue.close()
        await producer.close()
