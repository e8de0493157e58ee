"""An active job's record for unit tests that need one without a backend: the fields a fetch
fills, each test passing only the values it is about."""

from __future__ import annotations

from typing import Any

from conveyor.drivers.records import JobRecord, JobState

NOW = 1_700_000_000.0


def active_record(**fields: Any) -> JobRecord:
    """A leased job, attempt 1 of 3, enqueued, run and started at :data:`NOW`; ``fields``
    replace any of these values or set the others."""
    values: dict[str, Any] = {
        "id": "j1",
        "queue": "default",
        "name": "n",
        "payload": b"{}",
        "state": JobState.ACTIVE,
        "priority": 0,
        "attempt": 1,
        "max_attempts": 3,
        "run_at": NOW,
        "enqueued_at": NOW,
        "seq": 1,
        "started_at": NOW,
        "lease_token": "tok",
    }
    values.update(fields)
    return JobRecord(**values)
