"""``enqueue_on_commit``: enqueue a job or a Django task when the transaction commits.

Django 6.0 dropped its own enqueue-on-commit; ``transaction.on_commit(...)`` alone would lose a
job if the process died between the commit and the enqueue. Here, when the queue lives in the
Django database (SQLite or PostgreSQL), the job is written now, by Django's own connection,
inside the ORM's transaction: it exists if and only if the transaction commits. Elsewhere
(Redis, another database), its id is chosen now and the job is enqueued by
``transaction.on_commit``; a rollback enqueues nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.tasks import Task, task_backends
from django.utils.json import normalize_json
from pydantic import BaseModel

from conveyor import JobDef, SyncQueue
from conveyor._ids import new_job_ids
from conveyor.core.serialization import encode_payload
from conveyor.django.backend import ConveyorBackend
from conveyor.django.urls import shares_database

if TYPE_CHECKING:
    from conveyor.django.jobs import AnyTask

PayloadT = TypeVar("PayloadT", bound=BaseModel)


@overload
def enqueue_on_commit(
    target: AnyTask, /, *args: Any, using: str | None = None, **kwargs: Any
) -> str: ...


@overload
def enqueue_on_commit(
    target: JobDef[PayloadT, Any],
    payload: PayloadT,
    /,
    *,
    using: str | None = None,
    queue: SyncQueue | None = None,
    **options: Any,
) -> str: ...


def enqueue_on_commit(target: Any, /, *args: Any, using: str | None = None, **kwargs: Any) -> str:
    """Enqueue when the current transaction of Django's database ``using`` commits; returns
    the job id (the ``TaskResult`` id of a Django task).

    ``enqueue_on_commit(task, *args, **kwargs)``: a Django ``@task`` on a ``ConveyorBackend``,
    with its arguments. ``enqueue_on_commit(definition, payload, queue=..., **options)``: a
    Conveyor job on ``queue`` (a ``SyncQueue``; by default the queue of the ``default``
    TASKS backend), with ``SyncQueue.enqueue``'s options (``delay``, ``priority``, ...).
    Outside a transaction it enqueues at once, as ``transaction.on_commit`` runs at once.
    """
    alias = using or DEFAULT_DB_ALIAS
    if isinstance(target, Task):
        return _task_on_commit(cast("AnyTask", target), args, kwargs, alias)
    if isinstance(target, JobDef):
        if len(args) != 1:
            raise TypeError("enqueue_on_commit(definition, payload, ...) takes one payload")
        queue = kwargs.pop("queue", None)
        definition = cast("JobDef[Any, Any]", target)  # type: ignore[redundant-cast]  # pyright: Unknown
        return _job_on_commit(definition, args[0], queue, kwargs, alias)
    raise TypeError(
        f"enqueue_on_commit takes a Django @task or a Conveyor job definition, not {target!r}"
    )


def _task_on_commit(
    task: AnyTask, args: tuple[Any, ...], kwargs: dict[str, Any], using: str
) -> str:
    backend = task_backends[task.backend]
    if not isinstance(backend, ConveyorBackend):
        raise TypeError(
            f"enqueue_on_commit needs a task on a ConveyorBackend; TASKS[{task.backend!r}] is "
            f"{type(backend).__name__}"
        )
    if backend.joined_connection(using) is not None:
        # Written now, in the transaction: it is the commit that makes it exist.
        return backend.enqueue_with_id(task, args, kwargs, job_id=None, using=using).id
    # Refuse a bad task or arguments now, not after the commit.
    backend.validate_task(task)
    normalize_json(list(args))
    normalize_json(kwargs)
    job_id = new_job_ids(1)[0]
    transaction.on_commit(
        lambda: backend.enqueue_with_id(task, args, kwargs, job_id=job_id, using=None),
        using=using,
    )
    return job_id


def _job_on_commit(
    definition: JobDef[Any, Any],
    payload: Any,
    queue: SyncQueue | None,
    options: dict[str, Any],
    using: str,
) -> str:
    if queue is None:
        default = task_backends["default"]
        if not isinstance(default, ConveyorBackend):
            raise TypeError(
                "enqueue_on_commit(definition, payload) without queue= uses the queue of "
                "TASKS['default'], which is not a ConveyorBackend: pass queue="
            )
        queue = default.queue
    connection = connections[using]
    if connection.in_atomic_block and shares_database(queue.queue.url, using):
        connection.ensure_connection()
        handle = queue.enqueue(definition, payload, connection=connection.connection, **options)
        return handle.id
    # Validated (and measured) now, so a bad payload fails here rather than after the commit.
    encode_payload(definition.name, definition.payload_type, payload, queue.queue.max_payload_bytes)
    job_id: str = options.pop("job_id", None) or new_job_ids(1)[0]
    transaction.on_commit(
        lambda: queue.enqueue(definition, payload, job_id=job_id, **options), using=using
    )
    return job_id
