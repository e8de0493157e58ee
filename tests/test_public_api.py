"""The public surface: adding or removing a name is a deliberate, reviewed change."""

from __future__ import annotations

import importlib

import pytest

import conveyor

PUBLIC_NAMES = [
    "AttemptError",
    "BackendError",
    "BackendUnavailable",
    "Backoff",
    "CallNext",
    "ChangeResult",
    "ChangeStatus",
    "ConveyorError",
    "CronFireStatus",
    "CronInfo",
    "Debounce",
    "DedupPolicy",
    "DuplicateHandler",
    "Exponential",
    "FakeClock",
    "Fixed",
    "HandlerSignal",
    "InsertStatus",
    "InvalidArgument",
    "InvalidJobDefinition",
    "JobCall",
    "JobContext",
    "JobDef",
    "JobEvent",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobRequest",
    "JobState",
    "Middleware",
    "MigrationRequired",
    "MissingHandlers",
    "Observer",
    "PayloadTooLarge",
    "PayloadValidationError",
    "Permanent",
    "Queue",
    "QueueInfo",
    "QueueStats",
    "Rate",
    "RateLimited",
    "ResultTimeout",
    "Retention",
    "Retry",
    "Snooze",
    "SyncJobHandle",
    "SyncQueue",
    "Throttle",
    "UnknownJob",
    "UnsupportedURL",
    "UntilFinished",
    "UntilStarted",
    "Worker",
    "WorkerConfig",
    "WorkerFailed",
    "WorkerInfo",
    "WorkerStats",
    "__version__",
    "job",
]


def test_all_is_pinned() -> None:
    assert conveyor.__all__ == PUBLIC_NAMES


def test_all_is_sorted_and_unique() -> None:
    assert sorted(set(conveyor.__all__)) == conveyor.__all__


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_each_name_is_importable(name: str) -> None:
    module = importlib.import_module("conveyor")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from conveyor import {name}", namespace)
    assert namespace[name] is getattr(conveyor, name)


def test_star_import_exports_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from conveyor import *", namespace)
    exported = sorted(k for k in namespace if k != "__builtins__")
    assert exported == sorted(PUBLIC_NAMES)


def test_errors_share_a_base() -> None:
    for name in (
        "BackendUnavailable",
        "DuplicateHandler",
        "InvalidArgument",
        "InvalidJobDefinition",
        "JobFailed",
        "JobNotFound",
        "MigrationRequired",
        "MissingHandlers",
        "PayloadTooLarge",
        "PayloadValidationError",
        "ResultTimeout",
        "UnknownJob",
        "UnsupportedURL",
    ):
        assert issubclass(getattr(conveyor, name), conveyor.ConveyorError), name
    for name in ("Permanent", "Retry", "Snooze"):
        cls = getattr(conveyor, name)
        assert issubclass(cls, conveyor.HandlerSignal), name
        assert not issubclass(cls, conveyor.ConveyorError), name


def test_version_is_a_string() -> None:
    assert isinstance(conveyor.__version__, str)
    assert conveyor.__version__
