"""Label values stay bounded, whatever the backend holds; instrumenting is checked."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conveyor import InvalidArgument, Queue
from conveyor.drivers.records import JobRecord, JobState, TransitionKind
from conveyor.metrics import instrument
from conveyor.metrics.families import Families
from conveyor.metrics.health import HealthMonitor, Report
from conveyor.metrics.observer import JobMetrics
from tests.metrics.app import make_worker


def record(job_id: str, name: str, queue: str = "metered") -> JobRecord:
    return JobRecord(
        id=job_id,
        queue=queue,
        name=name,
        payload=b"{}",
        state=JobState.ACTIVE,
        priority=0,
        attempt=1,
        max_attempts=3,
        run_at=100.0,
        enqueued_at=100.0,
        seq=1,
        lease_token=f"token-{job_id}",
    )


def test_unknown_names_and_queues_share_one_label_value() -> None:
    registry = CollectorRegistry()
    observer = JobMetrics(
        Families(registry, process=False), HealthMonitor(), lambda: (["metered"], ["known"])
    )
    observer.register(registry)
    for n in range(50):
        r = record(f"j{n}", f"made.up.{n}", queue="metered" if n % 2 else f"q{n}")
        observer.job_started(r, now=102.5)
        observer.job_finished(r, TransitionKind.COMPLETE, 0.01)
    r = record("k", "known")
    observer.job_finished(r, None, 0.0)  # handed back unrun, then lost: counted, not timed
    text = generate_latest(registry).decode()
    assert "made.up" not in text and 'queue="q' not in text
    assert 'conveyor_jobs_total{job="other",outcome="completed",queue="other"} 25.0' in text
    assert 'conveyor_jobs_total{job="other",outcome="completed",queue="metered"} 25.0' in text
    assert 'conveyor_jobs_total{job="known",outcome="lease_lost",queue="metered"} 1.0' in text
    assert 'conveyor_job_wait_seconds_sum{job="other",queue="metered"} 62.5' in text
    assert 'conveyor_job_duration_seconds_count{job="known"' not in text
    assert 'conveyor_jobs_running{queue="metered"} 0.0' in text


def test_instrument_checks_its_arguments(tmp_path: object) -> None:
    worker = make_worker(Queue.from_url("memory://labels"))
    with pytest.raises(InvalidArgument, match="port must be"):
        instrument(worker, port=70000)
    metrics = instrument(worker, port=0, host="127.0.0.1")
    try:
        with pytest.raises(InvalidArgument, match="instrumented already"):
            instrument(worker, port=0)
    finally:
        metrics.close()
    instrument(worker, port=0, host="127.0.0.1").close()  # closing lets it be instrumented anew


async def test_readiness_fails_when_held_leases_stop_renewing() -> None:
    health = HealthMonitor()
    stopping = asyncio.Event()
    health.attach(asyncio.get_running_loop(), stopping, lease_seconds=1.5, renew_interval=0.5)

    async def ready() -> Report:  # probes come from the server's threads, never the loop
        return await asyncio.to_thread(health.readiness)

    health.lease_renewal(True)
    assert (await ready()).ok
    health.lease_renewal(False)  # a failure is retried soon: not a problem yet
    assert (await ready()).checks["leases"].ok
    await asyncio.sleep(0.6)  # over a third of the lease
    health.lease_renewal(False)
    report = await ready()
    assert not report.ok and report.as_json()["failing"] == ["leases"], report
    health.lease_renewal(True)
    assert (await ready()).ok
    stopping.set()
    assert (await ready()).as_json()["failing"] == ["worker"]
    assert (await asyncio.to_thread(health.liveness)).ok  # stopping is not dying
