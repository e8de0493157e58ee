"""A known workload, scraped over real HTTP: the counters, histograms and gauges add up."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import Queue
from conveyor.metrics import instrument
from tests.metrics.app import QUEUE, Work, doomed, flaky, make_worker, ok
from tests.metrics.scrape import get, named, probe, samples, value


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_workload_is_counted_exactly(backend_url: str) -> None:
    queue = Queue.from_url(backend_url)
    worker = make_worker(queue, burst=True)
    metrics = instrument(worker, port=0, host="127.0.0.1", depth_interval=0.2)
    try:
        await queue.enqueue_many(
            [ok.request(Work(n=i)) for i in range(7)]
            + [flaky.request(Work(n=i)) for i in range(2)]
            + [doomed.request(Work(n=i)) for i in range(3)]
        )
        # Not started yet: alive (nothing to be stuck), not ready.
        assert (await asyncio.to_thread(probe, f"{metrics.url}/healthz"))[0] == 200
        status, body = await asyncio.to_thread(probe, f"{metrics.url}/readyz")
        assert status == 503 and body["failing"] == ["worker"], body

        await asyncio.wait_for(worker.run(), timeout=60)

        found = await asyncio.to_thread(samples, metrics.url)
        jobs = {
            (labels["job"], labels["outcome"]): v
            for labels, v in named(found, "conveyor_jobs_total")
            if v
        }
        assert jobs == {
            ("metered.ok", "completed"): 7,
            ("metered.flaky", "retried"): 2,
            ("metered.flaky", "completed"): 2,
            ("metered.doomed", "failed"): 3,
        }
        assert {labels["queue"] for labels, _ in named(found, "conveyor_jobs_total")} == {QUEUE}
        attempts = {"metered.ok": 7, "metered.flaky": 4, "metered.doomed": 3}
        for name, count in attempts.items():
            assert value(found, "conveyor_job_duration_seconds_count", queue=QUEUE, job=name) == (
                count
            )
            assert value(found, "conveyor_job_wait_seconds_count", queue=QUEUE, job=name) == count
            inf = value(
                found, "conveyor_job_duration_seconds_bucket", queue=QUEUE, job=name, le="+Inf"
            )
            assert inf == count
        assert value(found, "conveyor_jobs_running", queue=QUEUE) == 0
        assert value(found, "conveyor_worker_concurrency") == 4
        assert value(found, "conveyor_worker_up") == 0  # the burst is over
        assert not named(found, "conveyor_queue_depth")  # the leader let go when it stopped
        assert value(found, "conveyor_metrics_leader") == 0
        assert any(name.startswith("process_") for name, _ in found)

        status, body = await asyncio.to_thread(probe, f"{metrics.url}/readyz")
        assert status == 503 and body["failing"] == ["worker"], body
        assert body["checks"]["worker"]["detail"] == "the worker is stopping or has stopped"
        assert (await asyncio.to_thread(get, f"{metrics.url}/nope"))[0] == 404
    finally:
        metrics.close()
        await queue.close()
