"""The defaults the README's configuration table promises."""

from __future__ import annotations

from conveyor import Exponential, Queue, Retention, WorkerConfig, job
from conveyor.backends.registry import DEFAULT_URL
from conveyor.core.serialization import DEFAULT_MAX_PAYLOAD_BYTES
from tests.conformance.worker.helpers import Num


def test_worker_defaults() -> None:
    config = WorkerConfig()
    assert config.concurrency == 5
    assert config.lease_seconds == 30.0
    assert config.renew_interval == 10.0
    assert config.shutdown_grace == 25.0
    assert config.max_stalls == 2
    assert config.queues == ()


def test_retention_defaults() -> None:
    retention = Retention()
    assert retention.completed_max_count == 1000
    assert retention.completed_max_age is None
    assert retention.failed_max_age is None  # failed jobs stay until purged
    assert retention.cancelled_max_age == 7 * 24 * 3600


def test_job_defaults() -> None:
    definition = job("defaults.check", Num)
    assert definition.attempts == 3
    assert definition.queue == "default"
    assert definition.priority == 0
    assert definition.timeout is None
    assert definition.backoff == Exponential(base=1.0, factor=2.0, cap=3600.0, jitter=True)


def test_queue_defaults(monkeypatch: object) -> None:
    assert DEFAULT_URL == "sqlite:///conveyor.db"
    assert DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024
    assert Queue.from_url("memory://defaults").max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES
    assert Queue.from_url().url == DEFAULT_URL  # CONVEYOR_URL is unset in tests
