"""The engine maps a backend's own failures once, and checks capabilities by name."""

from __future__ import annotations

import pytest

from conveyor import BackendError, BackendUnavailable, InvalidArgument
from conveyor.backends.memory import MemoryDriver
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import NewJob
from conveyor.engine import CapabilityMissing, Engine, OperationEvent


class FlakyConnection(OSError):
    pass


class BrokenDriver(MemoryDriver):
    """A memory driver whose client library fails like a dropped connection would."""

    infrastructure_errors = (FlakyConnection,)

    async def job_count_by_state(self, queue: str | None = None) -> dict[object, int]:  # type: ignore[override]
        raise FlakyConnection("connection reset by peer")


class BuggyDriver(MemoryDriver):
    async def job_count_by_state(self, queue: str | None = None) -> dict[object, int]:  # type: ignore[override]
        raise KeyError("a bug, not an outage")


async def test_declared_infrastructure_errors_become_backend_unavailable() -> None:
    engine = Engine(BrokenDriver("memory://"))
    with pytest.raises(BackendUnavailable, match="job_count_by_state on memory:// failed"):
        await engine.job_count_by_state()


async def test_any_other_backend_failure_becomes_a_backend_error_naming_the_operation() -> None:
    """A script that refused its input, an integrity violation, a bug: never the backend
    library's own exception type (a CLI prints it as an ``Error:`` line)."""
    engine = Engine(BuggyDriver("memory://"))
    with pytest.raises(
        BackendError, match="job_count_by_state on memory:// failed: KeyError"
    ) as info:
        await engine.job_count_by_state()
    assert isinstance(info.value.__cause__, KeyError)


async def test_conveyors_own_errors_pass_through_unchanged() -> None:
    engine = Engine(MemoryDriver("memory://"))
    with pytest.raises(InvalidArgument, match="delay"):
        await engine.job_insert_many([NewJob("a", "q", "n", b"{}", delay=float("nan"))])


async def test_every_operation_is_reported_once_to_subscribers() -> None:
    events: list[OperationEvent] = []
    engine = Engine(BuggyDriver("memory://"))
    unsubscribe = engine.subscribe(events.append)
    engine.subscribe(lambda event: 1 / 0)  # a broken subscriber changes nothing
    await engine.job_get_many(["x"])
    with pytest.raises(BackendError):
        await engine.job_count_by_state()
    other = engine.connect_another()  # engines for other threads report to the same place
    await other.queue_list()
    unsubscribe()
    await engine.queue_list()
    assert [(e.operation, e.outcome) for e in events] == [
        ("job_get_many", "ok"),
        ("job_count_by_state", "error"),
        ("queue_list", "ok"),
    ]
    assert all(e.duration >= 0 for e in events)


def test_require_names_the_purpose_and_the_way_out() -> None:
    engine = Engine(MemoryDriver("memory://x"))
    assert not engine.has(Capability.SHARED_ACROSS_PROCESSES)
    with pytest.raises(CapabilityMissing, match="memory://x cannot be used by a worker process"):
        engine.require(Capability.SHARED_ACROSS_PROCESSES, "by a worker process")


def test_sqlite_is_shared_across_processes(tmp_path: object) -> None:
    from conveyor.backends.sqlite import SQLiteDriver

    engine = Engine(SQLiteDriver(f"sqlite:///{tmp_path}/x.db"))
    engine.require(Capability.SHARED_ACROSS_PROCESSES, "by a worker process")
    assert engine.has(Capability.LISTEN_ACROSS_PROCESSES)


def test_another_connection_is_wrapped_too() -> None:
    engine = Engine(MemoryDriver("memory://y"))
    assert isinstance(engine.connect_another(), Engine)
