"""The engine maps a backend's own failures once, and checks capabilities by name."""

from __future__ import annotations

import pytest

from conveyor import BackendUnavailable
from conveyor.backends.memory import MemoryDriver
from conveyor.drivers.protocol import Capability
from conveyor.engine import CapabilityMissing, Engine


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


async def test_other_exceptions_are_bugs_and_pass_through_unchanged() -> None:
    engine = Engine(BuggyDriver("memory://"))
    with pytest.raises(KeyError):
        await engine.job_count_by_state()


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
