"""Django's own ``tests/tasks`` suite, run against ``conveyor.django.ConveyorBackend``.

Copied into the ``tests/tasks/`` package of the Django sdist as ``test_conveyor_backend.py``
and run by Django's ``tests/runtests.py`` (see ``tests/with_django/run_suite.py``). Each class below
is one of Django's test classes with ``TASKS`` pointing at Conveyor instead of Django's
backends:

* where the tests expect Django's *immediate* backend (the task has run by the time
  ``enqueue`` returns), ``DrainingConveyorBackend`` stores the job in Conveyor, then runs a
  Conveyor burst worker (the ``django.task`` handler, in this process so that Django's signals
  and logs reach the test) until the queue is drained, and reads the result back from the
  store;
* where they expect the *dummy* backend (tasks are stored, never run),
  ``RecordingConveyorBackend`` stores the job in Conveyor; its ``results`` and ``clear()``
  (what the dummy backend's tests inspect) read and delete the jobs in the Conveyor store.

The queue's URL is ``$CONVEYOR_URL`` (set by the settings module: a SQLite file or a
PostgreSQL schema). Tests that are about a Django backend class itself rather than about
running tasks are listed in ``NOT_APPLICABLE`` with the reason, and removed from the classes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from django.tasks import Task, TaskResult
from django.test import override_settings

from conveyor import WorkerConfig
from conveyor.django import ConveyorBackend, django_worker

from . import test_dummy_backend, test_immediate_backend, test_tasks

HERE = __name__
DRAINING = f"{HERE}.DrainingConveyorBackend"
RECORDING = f"{HERE}.RecordingConveyorBackend"
DRAIN_TIMEOUT = 60.0


class DrainingConveyorBackend(ConveyorBackend):
    """ConveyorBackend, with the queue drained by a burst worker before ``enqueue`` returns."""

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        result = super().enqueue(task, args, kwargs)
        drain(self, task.queue_name)
        result.refresh()
        return result


class RecordingConveyorBackend(ConveyorBackend):
    """ConveyorBackend, with the dummy backend's ``results`` and ``clear()`` read from and
    applied to the Conveyor store."""

    @property
    def results(self) -> list[TaskResult]:
        jobs = self.queue.list_jobs(name="django.task", limit=1000)
        return [self.get_result(info.id) for info in reversed(jobs)]

    def clear(self) -> None:
        # Waiting jobs are cancelled first: Conveyor deletes only finished ones.
        while jobs := self.queue.list_jobs(limit=1000):
            ids = [info.id for info in jobs]
            self.queue.cancel(ids)
            self.queue.delete(ids)


def drain(backend: ConveyorBackend, queue_name: str) -> None:
    """Run a Conveyor burst worker for ``queue_name`` until it has nothing left to run, in a
    thread with an event loop of its own (the caller may be inside Django's async_to_sync)."""
    config = WorkerConfig(burst=True, concurrency=1, lease_keeper="thread", poll_interval=0.05)
    worker = django_worker(backend, queues=[queue_name], config=config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(worker.run())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="conveyor-drain")
    thread.start()
    thread.join(DRAIN_TIMEOUT)
    if thread.is_alive():
        worker.stop(grace=0)
        thread.join(10)
        raise AssertionError(f"the burst worker did not drain {queue_name!r} in time")
    if failure:
        raise failure[0]


# -- TASKS substitution -----------------------------------------------------------------------

SUBSTITUTES = {
    "django.tasks.backends.immediate.ImmediateBackend": DRAINING,
    "django.tasks.backends.dummy.DummyBackend": RECORDING,
}


def substituted(tasks: dict[str, Any]) -> dict[str, Any]:
    """A TASKS setting with Django's immediate and dummy backends replaced by Conveyor."""
    return {
        alias: {**params, "BACKEND": SUBSTITUTES.get(params.get("BACKEND", ""), params["BACKEND"])}
        for alias, params in tasks.items()
    }


class substituting_override_settings(override_settings):
    """``override_settings`` whose TASKS run on Conveyor: replaces the name in the test
    modules, for the ``with override_settings(TASKS=...)`` blocks inside test bodies."""

    def __init__(self, **kwargs: Any) -> None:
        if "TASKS" in kwargs:
            kwargs["TASKS"] = substituted(kwargs["TASKS"])
        super().__init__(**kwargs)


for _module in (test_immediate_backend, test_dummy_backend, test_tasks):
    _module.override_settings = substituting_override_settings  # type: ignore[attr-defined]


NOT_APPLICABLE: dict[str, str] = {}


def on_conveyor(parent: type, not_applicable: dict[str, str]) -> type:
    """A subclass of Django's test class ``parent`` whose TASKS (class- and method-level
    ``override_settings``) run on Conveyor, without the tests in ``not_applicable``."""
    namespace: dict[str, Any] = {}
    for name in dir(parent):
        if not name.startswith("test"):
            continue
        if name in not_applicable:
            namespace[name] = None  # not callable: unittest does not collect it
            NOT_APPLICABLE[f"{parent.__name__}.{name}"] = not_applicable[name]
            continue
        method = getattr(parent, name)
        decorated = getattr(method, "__wrapped__", None)
        overrides = _method_override(method)
        if decorated is not None and overrides is not None:
            namespace[name] = substituting_override_settings(**overrides)(decorated)
    overridden = getattr(parent, "_overridden_settings", None) or {}
    cls = type(f"Conveyor{parent.__name__}", (parent,), namespace)
    if "TASKS" in overridden:
        cls = substituting_override_settings(**overridden)(cls)
    return cls


def _method_override(method: Any) -> dict[str, Any] | None:
    """The settings a method-level ``@override_settings`` gave, from its closure."""
    for cell in getattr(method, "__closure__", None) or ():
        value = cell.cell_contents
        if isinstance(value, override_settings):
            return dict(value.options)
    return None


IMMEDIATE_ONLY = "asserts the backend class is Django's ImmediateBackend and has no OPTIONS"
NO_GET_RESULT = (
    "asserts the immediate backend cannot retrieve or refresh results; ConveyorBackend "
    "supports them (supports_get_result), tested by TaskTestCase and DummyBackendTestCase here"
)

ConveyorImmediateBackendTestCase = on_conveyor(
    test_immediate_backend.ImmediateBackendTestCase,
    {
        "test_using_correct_backend": IMMEDIATE_ONLY,
        "test_cannot_get_result": NO_GET_RESULT,
        "test_cannot_refresh_result": NO_GET_RESULT,
        "test_cannot_pass_run_after": (
            "asserts the immediate backend refuses run_after; ConveyorBackend supports it "
            "(supports_defer)"
        ),
        "test_throws_keyboard_interrupt": (
            "asserts a KeyboardInterrupt raised by the task reaches the code that called "
            "enqueue(), which only a backend running the task in the caller can do; a worker "
            "records it as the task's failure"
        ),
    },
)
ConveyorImmediateBackendTransactionTestCase = on_conveyor(
    test_immediate_backend.ImmediateBackendTransactionTestCase, {}
)
ConveyorDummyBackendTestCase = on_conveyor(
    test_dummy_backend.DummyBackendTestCase,
    {
        "test_using_correct_backend": (
            "asserts the backend class is Django's DummyBackend and has no OPTIONS"
        ),
        "test_refresh_result": (
            "changes the dummy backend's in-memory TaskResult object and expects refresh() to "
            "see the change; Conveyor's results are read from its store"
        ),
        "test_refresh_result_async": (
            "changes the dummy backend's in-memory TaskResult object and expects arefresh() "
            "to see the change; Conveyor's results are read from its store"
        ),
    },
)
ConveyorDummyBackendTransactionTestCase = on_conveyor(
    test_dummy_backend.DummyBackendTransactionTestCase, {}
)
ConveyorTaskTestCase = on_conveyor(
    test_tasks.TaskTestCase,
    {
        "test_using_correct_backend": "asserts the backend class is Django's DummyBackend",
        "test_get_backend": (
            "asserts the backend classes are Django's DummyBackend and ImmediateBackend"
        ),
    },
)

# Django's own classes are imported above; keep only the Conveyor ones for the runner.
del test_dummy_backend, test_immediate_backend, test_tasks
__all__ = [
    "ConveyorDummyBackendTestCase",
    "ConveyorDummyBackendTransactionTestCase",
    "ConveyorImmediateBackendTestCase",
    "ConveyorImmediateBackendTransactionTestCase",
    "ConveyorTaskTestCase",
]
