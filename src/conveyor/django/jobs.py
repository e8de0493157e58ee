"""The one Conveyor job that carries every Django task, and what runs it in a worker.

A Django ``@task`` is stored as a ``django.task`` job whose payload names the task function by
its import path, with its JSON arguments and the ``Task`` settings it was enqueued with, so
that a worker (``manage.py conveyor_worker``) imports the function and calls it, and
``get_result`` can rebuild the ``TaskResult`` from the stored job.
"""

from __future__ import annotations

import json
import traceback
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string
from pydantic import BaseModel, JsonValue

from conveyor import JobContext, job

if TYPE_CHECKING:  # django-stubs makes them generic; Django's own classes are not subscriptable
    AnyTask: TypeAlias = Task[..., Any]
    AnyTaskResult: TypeAlias = TaskResult[..., Any]

JOB_NAME = "django.task"
# A task's error travels in the job's error text as one line of JSON after this marker, so
# that ``get_result`` gives back the exception's class path and traceback exactly.
ERROR_MARKER = "conveyor-django-task-error "
# Tracebacks longer than this are cut in the middle, so the marker line stays whole in the
# job's error text (which Conveyor keeps to 8,000 characters).
MAX_TRACEBACK_CHARS = 3000


class DjangoTask(BaseModel):
    """What a ``django.task`` job carries."""

    task: str  # the task's module path: ``myapp.tasks.send_welcome``
    args: list[JsonValue]
    kwargs: dict[str, JsonValue]
    backend: str  # the TASKS alias it was enqueued on
    priority: int
    queue_name: str
    run_after: datetime | None = None
    takes_context: bool = False


# Django runs a task once; a worker that crashes mid-task still has it rescued and run again
# (at-least-once), which Django's TaskResult shows as one more worker id.
django_task = job(JOB_NAME, DjangoTask, result=JsonValue, attempts=1)


class TaskFailed(Exception):
    """Raised by the worker for a task that raised: its text is the marker and the task's
    exception class path and traceback, as JSON."""


def load_task(payload: DjangoTask) -> AnyTask:
    """The ``Task`` a payload names, with the settings it was enqueued with."""
    found: Any = import_string(payload.task)
    task: AnyTask
    if isinstance(found, Task):
        task = cast("AnyTask", found)
    else:  # a plain function (the module kept the undecorated name)
        task = Task(
            priority=payload.priority,
            func=found,
            backend=payload.backend,
            queue_name=payload.queue_name,
            run_after=payload.run_after,
            takes_context=payload.takes_context,
        )
    return task.using(
        priority=payload.priority,
        queue_name=payload.queue_name,
        run_after=payload.run_after,
        backend=payload.backend,
    )


def run_django_task(payload: DjangoTask, ctx: JobContext) -> JsonValue:
    """The handler of ``django.task``: call the task, sending Django's ``task_started`` and
    ``task_finished`` signals around it. Runs in a worker thread (a plain ``def`` handler),
    so async tasks run on an event loop of their own via ``Task.call``."""
    from django.db import connections

    from conveyor.django.backend import ConveyorBackend

    try:
        task = load_task(payload)
        started = timezone.now()
        result = TaskResult(
            task=task,
            id=ctx.job_id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=as_django_time(ctx.enqueued_at),
            started_at=started,
            last_attempted_at=started,
            finished_at=None,
            args=payload.args,
            kwargs=payload.kwargs,
            backend=payload.backend,
            errors=[],
            worker_ids=[ctx.worker_id] * max(ctx.attempt, 1),
        )
        task_started.send(sender=ConveyorBackend, task_result=result)
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
            else:
                value = task.call(*result.args, **result.kwargs)
            returned: JsonValue = normalize_json(value)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt end the task too
            error = _task_error(exc)
            object.__setattr__(result, "finished_at", timezone.now())
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            result.errors.append(error)
            # Sent inside the except block, as Django's own backends do: its log receiver
            # attaches the exception being handled.
            task_finished.send(sender=ConveyorBackend, task_result=result)
            text = json.dumps(
                {
                    "exception_class_path": error.exception_class_path,
                    "traceback": error.traceback,
                }
            )
            raise TaskFailed(ERROR_MARKER + text) from None
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "_return_value", returned)
        task_finished.send(sender=ConveyorBackend, task_result=result)
        return returned
    finally:
        # Each job runs in a thread of its own, which ends with it: its database connections
        # are closed here rather than left to the garbage collector.
        connections.close_all()


def _task_error(exc: BaseException) -> Any:
    from django.tasks.base import TaskError

    kind = type(exc)
    text = "".join(traceback.format_exception(exc))
    if len(text) > MAX_TRACEBACK_CHARS:
        half = MAX_TRACEBACK_CHARS // 2
        text = text[:half] + "\n...\n" + text[-half:]
    return TaskError(exception_class_path=f"{kind.__module__}.{kind.__qualname__}", traceback=text)


def as_django_time(moment: datetime) -> datetime:
    """An aware UTC time from Conveyor, as Django's settings want it (naive local time when
    ``USE_TZ`` is off)."""
    from django.conf import settings

    if settings.USE_TZ:
        return moment
    return timezone.make_naive(moment)
