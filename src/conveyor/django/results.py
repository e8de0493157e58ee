"""Django ``TaskResult`` values built from stored Conveyor jobs."""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any

from django.tasks import TaskResult, TaskResultStatus
from django.tasks.base import TaskError

import conveyor
from conveyor import JobInfo, JobState
from conveyor.django.jobs import ERROR_MARKER, DjangoTask, as_django_time, load_task

if TYPE_CHECKING:
    from conveyor.django.jobs import AnyTaskResult

# Conveyor's states as Django's: a job waiting for its time, in the queue or waiting to be
# retried is READY ("ready to be executed again"); cancelled is a failure to Django.
STATUS: dict[JobState, TaskResultStatus] = {
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.QUEUED: TaskResultStatus.READY,
    JobState.RETRYING: TaskResultStatus.READY,
    JobState.ACTIVE: TaskResultStatus.RUNNING,
    JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}


def task_result(info: JobInfo) -> AnyTaskResult:
    """The ``TaskResult`` of a stored ``django.task`` job."""
    payload = DjangoTask.model_validate_json(info.payload_json)
    status = STATUS[info.state]
    started = None if info.started_at is None else as_django_time(info.started_at)
    result = TaskResult(
        task=load_task(payload),
        id=info.id,
        status=status,
        enqueued_at=as_django_time(info.enqueued_at),
        started_at=started,
        last_attempted_at=started,
        finished_at=None if info.finished_at is None else as_django_time(info.finished_at),
        args=payload.args,
        kwargs=payload.kwargs,
        backend=payload.backend,
        errors=_errors(info),
        # Conveyor records the worker of the latest attempt: one entry per attempt started.
        worker_ids=[info.worker_id or ""] * info.attempt,
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", info.result)
    return result


def _errors(info: JobInfo) -> list[TaskError]:
    texts = [attempt.error for attempt in info.errors]
    if info.error is not None and not any(info.error.startswith(t[:200]) for t in texts[-1:]):
        texts.append(info.error)
    return [task_error(text) for text in texts]


def task_error(text: str) -> TaskError:
    """The ``TaskError`` of one attempt's error text: the task's own exception when the task
    raised, else what Conveyor failed the job with (a timeout, a cancel, a lost worker)."""
    marker = text.find(ERROR_MARKER)
    if marker != -1:
        line = text[marker + len(ERROR_MARKER) :].split("\n", 1)[0]
        try:
            # The JSON object, then whatever Conveyor added after it on the line.
            data: Any = json.JSONDecoder().raw_decode(line)[0]
            return TaskError(
                exception_class_path=str(data["exception_class_path"]),
                traceback=str(data["traceback"]),
            )
        except (ValueError, KeyError, TypeError):
            pass  # cut short: fall through to the plain text
    name = text.split(":", 1)[0].strip()
    if isinstance(getattr(builtins, name, None), type):
        path = f"builtins.{name}"
    elif isinstance(getattr(conveyor, name, None), type):
        path = f"conveyor.{name}"
    else:
        path = "builtins.Exception"
    return TaskError(exception_class_path=path, traceback=text)
