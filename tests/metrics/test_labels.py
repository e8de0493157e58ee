"""Label values stay bounded, whatever the backend holds; instrumenting is checked."""

from __future__ import annotations

import asyncio
import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conveyor import BackendUnavailable, InvalidArgument, Queue
from conveyor.drivers.records import JobRecord, JobState, QueueInfo, TransitionKind, WorkerInfo
from conveyor.engine import OperationEvent
from conveyor.metrics import instrument
from conveyor.metrics.families import Families
from conveyor.metrics.health import HealthMonitor, Report
from conveyor.metrics.observer import JobMetrics
from conveyor.metrics.poller import snapshot
from tests.metrics.app import make_worker
from tests.test_readme import README


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


def test_the_readme_table_lists_every_metric_exported() -> None:
    """The table a Grafana user copies names exactly the conveyor_* series, with their types
    and labels."""
    rows = re.findall(
        r"^\| `(conveyor_\w+)` \| (\w+) \|([^|]*)\|", README.read_text(), re.MULTILINE
    )
    documented = {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}
    worker = make_worker(Queue.from_url("memory://table"))
    metrics = instrument(worker, port=0, host="127.0.0.1", process_metrics=False)
    try:
        # Something in every family, so that each shows its labels.
        job = record("j", "metered.ok")
        metrics.observer.job_started(job, now=101.0)
        metrics.observer.job_finished(job, TransitionKind.COMPLETE, 0.5)
        metrics.observer.on_operation(OperationEvent("job_fetch", 0.1, BackendUnavailable("x")))
        metrics.families.info.labels("0", "metered").set(1)
        metrics.collector.snapshot = snapshot(
            [QueueInfo("metered", paused=False)],
            [WorkerInfo("w", "h", 1, ("metered",), 5, 0.0)],
        )
        exported: dict[str, tuple[str, set[str]]] = {}
        for family in metrics.registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = {label for sample in family.samples for label in sample.labels}
            exported[name] = (family.type, labels - {"le"})
    finally:
        metrics.close()
    assert set(documented) == set(exported)
    for name, (kind, labels) in documented.items():
        assert exported[name] == (kind, labels), name
