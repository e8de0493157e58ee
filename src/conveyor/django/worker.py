"""The Conveyor worker that runs the Django tasks of one TASKS backend."""

from __future__ import annotations

from collections.abc import Iterable

from django.tasks import DEFAULT_TASK_QUEUE_NAME, task_backends

from conveyor import Queue, Worker, WorkerConfig
from conveyor.django.backend import ConveyorBackend
from conveyor.django.jobs import django_task, run_django_task


class DjangoWorker(Worker):
    """A worker of ``django.task`` jobs, which go to whichever queue each task names."""

    def unused_queues(self) -> list[str]:
        return []  # every queue is one a task may name: none is a misspelt definition queue


def backend_named(alias: str) -> ConveyorBackend:
    backend = task_backends[alias]
    if not isinstance(backend, ConveyorBackend):
        raise TypeError(
            f"TASKS[{alias!r}] is {type(backend).__name__}, not conveyor.django.ConveyorBackend"
        )
    return backend


def django_worker(
    backend: ConveyorBackend,
    *,
    queues: Iterable[str] = (),
    config: WorkerConfig | None = None,
) -> DjangoWorker:
    """A worker for ``backend``'s tasks, on ``queues`` (by default the backend's ``QUEUES``,
    or ``default`` when they are not listed)."""
    chosen = sorted(set(queues) or backend.queues or {DEFAULT_TASK_QUEUE_NAME})
    worker = DjangoWorker(
        Queue.from_url(backend.url), queues=chosen, jobs=[django_task], config=config
    )
    worker.register(django_task, run_django_task)
    return worker
