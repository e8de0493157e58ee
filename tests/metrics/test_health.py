"""The probes: /readyz fails while the backend is down and recovers when it is back, /healthz
stays up through that (restarting workers would not bring the backend back) but fails when the
event loop is stuck."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor import Queue, Worker
from conveyor.metrics import instrument
from tests.conftest import redis_test_url
from tests.metrics.app import Work, make_worker, ok
from tests.metrics.scrape import probe, samples, value
from tests.servers.redis_server import RedisServer


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:  # its own: the test stops and starts it
        yield server


async def wait_probe(
    url: str, condition: Callable[[int, dict[str, Any]], bool], *, timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(probe, url)
        if condition(status, body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {body}")
        await asyncio.sleep(0.1)


async def test_readiness_follows_the_backend(tmp_path: Any, private_redis: RedisServer) -> None:
    queue = Queue.from_url(redis_test_url(private_redis.url))
    worker = make_worker(queue, poll_interval=0.2)
    metrics = instrument(worker, port=0, host="127.0.0.1", depth_interval=0.2)
    task = asyncio.create_task(worker.run())
    try:
        ready = await wait_probe(
            f"{metrics.url}/readyz", lambda s, _: s == 200, timeout=20, what="ready"
        )
        assert ready["status"] == "ok", ready

        private_redis.stop()
        down = await wait_probe(
            f"{metrics.url}/readyz",
            lambda s, b: s == 503 and "backend" in b["failing"],
            timeout=20,
            what="not ready while Redis is down",
        )
        assert down["failing"] == ["backend"], down
        assert "failed for" in down["checks"]["backend"]["detail"]
        status, live = await asyncio.to_thread(probe, f"{metrics.url}/healthz")
        assert status == 200, live
        found = await asyncio.to_thread(samples, metrics.url)
        assert value(found, "conveyor_worker_up") == 1
        errors = [v for (name, _), v in found.items() if name == "conveyor_backend_errors_total"]
        assert sum(errors) > 0

        private_redis.start()
        await wait_probe(
            f"{metrics.url}/readyz", lambda s, _: s == 200, timeout=30, what="ready again"
        )
        # And it works again: a job enqueued now runs.
        handle = await queue.enqueue(ok, Work(n=1))
        assert (await handle.result(timeout=20)) is None
        assert not task.done()
    finally:
        worker.stop(grace=0)
        await asyncio.gather(task, return_exceptions=True)
        metrics.close()
        await queue.close()


@pytest.fixture(params=["sqlite"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_stuck_event_loop_fails_liveness(backend_url: str) -> None:
    queue = Queue.from_url(backend_url)
    worker: Worker = make_worker(queue)
    metrics = instrument(worker, port=0, host="127.0.0.1", stall_seconds=1.0)
    task = asyncio.create_task(worker.run())
    try:
        await wait_probe(f"{metrics.url}/readyz", lambda s, _: s == 200, timeout=20, what="ready")
        results: list[tuple[int, dict[str, Any]]] = []

        blocked = threading.Event()

        def probe_later() -> None:
            blocked.wait(5)
            # The first probe sends a ping the loop cannot answer, the second finds it unanswered.
            results.append(probe(f"{metrics.url}/healthz"))
            time.sleep(2.0)
            results.append(probe(f"{metrics.url}/healthz"))

        prober = threading.Thread(target=probe_later)
        prober.start()
        blocked.set()
        # Blocks the event loop, as a sync call in an async handler would.
        prober.join(timeout=10)
        (first, _), (second, body) = results
        assert first == 200
        assert second == 503, body
        assert "has not answered" in body["checks"]["event_loop"]["detail"], body
        # Unblocked, it answers again.
        await wait_probe(f"{metrics.url}/healthz", lambda s, _: s == 200, timeout=5, what="live")
        status, body = await asyncio.to_thread(probe, f"{metrics.url}/readyz")
        assert status == 200, body
    finally:
        worker.stop(grace=0)
        await asyncio.gather(task, return_exceptions=True)
        metrics.close()
        await queue.close()
