"""``ConveyorBackend``: Django's tasks framework (``django.tasks``) on Conveyor.

::

    TASKS = {
        "default": {
            "BACKEND": "conveyor.django.ConveyorBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"url": "postgresql://app@db/app"},  # or {"database": "default"}
        }
    }

``OPTIONS``: ``url``, the Conveyor URL (else the URL of the Django database named by
``database``, else ``$CONVEYOR_URL``, else ``$REDIS_URL``); ``database``, the Django database
alias whose transactions a task enqueued inside ``transaction.atomic()`` joins when the queue
lives in that database (``"default"`` unless given).
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections
from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone

from conveyor import InvalidArgument, SyncQueue
from conveyor._definition import check_queue_name
from conveyor.django.jobs import JOB_NAME, DjangoTask, django_task
from conveyor.django.results import task_result
from conveyor.django.urls import database_url, shares_database

if TYPE_CHECKING:
    from conveyor.django.jobs import AnyTask, AnyTaskResult

P = ParamSpec("P")
R = TypeVar("R")

_queues: dict[str, SyncQueue] = {}
_queues_lock = threading.Lock()


def shared_queue(url: str) -> SyncQueue:
    """The process's one ``SyncQueue`` on ``url``: Django makes a backend per thread, and each
    must not start a thread and a connection of its own. Closed when the process exits."""
    with _queues_lock:
        queue = _queues.get(url)
        if queue is None or queue.closed:
            if not _queues:
                _at_exit(_close_queues)
            queue = _queues[url] = SyncQueue.from_url(url)
        return queue


def _at_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` as the interpreter exits, before the thread pools a queue's driver
    uses are shut down (``atexit`` runs after them, too late to close a SQLite queue)."""
    register: Any = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(callback)
    else:
        register(callback)


def _close_queues() -> None:
    with _queues_lock:
        for queue in _queues.values():
            queue.close()
        _queues.clear()


class ConveyorBackend(BaseTaskBackend):
    """Runs Django tasks on Conveyor: ``task.enqueue()`` stores a job, ``manage.py
    conveyor_worker`` runs it, ``task.get_result(id)`` reads it back from any process."""

    supports_defer = True  # run_after: the job is scheduled for that time
    supports_async_task = True  # async def tasks run on an event loop in the worker
    supports_get_result = True  # from any process, while Conveyor keeps the job
    supports_priority = True  # Django's higher-first priority, as Conveyor's lower-first

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options: Mapping[str, Any] = self.options
        self.database: str = options.get("database") or DEFAULT_DB_ALIAS
        # OPTIONS "url", else the database named by OPTIONS "database", else the environment.
        self._url: str | None = options.get("url") or None
        if self._url is None and not options.get("database"):
            self._url = os.environ.get("CONVEYOR_URL") or os.environ.get("REDIS_URL") or None
            if self._url is None:
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]: ConveyorBackend needs OPTIONS 'url' (a Conveyor URL) "
                    "or 'database' (the Django database alias the queue lives in), or "
                    "$CONVEYOR_URL"
                )
        self._open_sqlite_queue()

    def _open_sqlite_queue(self) -> None:
        """Open a SQLite queue now, before any transaction that enqueues: every first open of
        a SQLite queue in a process takes the file's write lock, which a Django transaction
        on the same file would hold once it has written (the enqueue would then wait for
        it). Other backends open on first use."""
        try:
            url = self.url
        except ImproperlyConfigured:
            return  # an in-memory Django database: no queue can live there
        if url.partition("://")[0].lower() == "sqlite":
            queue = shared_queue(url)
            queue.call(queue.queue.connect())

    @property
    def url(self) -> str:
        """The Conveyor URL; with only ``database`` given, that database's (read when first
        needed, so a test database replaces it as it replaces the database)."""
        return self._url or database_url(self.database)

    @property
    def queue(self) -> SyncQueue:
        """The ``SyncQueue`` this backend enqueues with and reads from."""
        return shared_queue(self.url)

    # -- validation ---------------------------------------------------------------------------

    def validate_task(self, task: AnyTask) -> None:
        super().validate_task(task)
        try:
            check_queue_name(task.queue_name)
        except InvalidArgument as exc:
            raise InvalidTask(str(exc)) from None

    # -- enqueue ------------------------------------------------------------------------------

    def enqueue(
        self, task: Task[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        result = self.enqueue_with_id(task, args, kwargs, job_id=None, using=self.database)
        return cast("TaskResult[P, R]", result)

    async def aenqueue(
        self, task: Task[P, R], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[P, R]:
        # In the thread Django's ORM calls of this request run in, so that an enqueue inside
        # an atomic block joins it as the sync one does.
        enqueue: Any = sync_to_async(self.enqueue, thread_sensitive=True)
        return cast("TaskResult[P, R]", await enqueue(task, args, kwargs))

    def enqueue_with_id(
        self,
        task: AnyTask,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        job_id: str | None,
        using: str | None,
    ) -> AnyTaskResult:
        """Enqueue ``task``; with ``using`` (a Django database alias), inside that database's
        current transaction when the queue lives there (see :meth:`joined_connection`)."""
        self.validate_task(task)
        # Normalizes the arguments to JSON, raising TypeError for what JSON cannot hold, as
        # Django's own backends do, before anything is written.
        pending = TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        payload = DjangoTask(
            task=task.module_path,
            args=pending.args,
            kwargs=pending.kwargs,
            backend=self.alias,
            priority=task.priority,
            queue_name=task.queue_name,
            run_after=task.run_after,
            takes_context=task.takes_context,
        )
        queue = self.queue
        connection = None if using is None else self.joined_connection(using)
        handle = queue.enqueue(
            django_task,
            payload,
            job_id=job_id,
            priority=-task.priority,  # Django runs higher first, Conveyor lower first
            queue=task.queue_name,
            run_at=_aware(task.run_after),
            connection=connection,
        )
        stored = None if connection is not None else queue.get(handle.id)
        if stored is not None:
            result = task_result(stored)
            object.__setattr__(result, "task", task)
        else:  # not visible outside the transaction yet
            object.__setattr__(pending, "id", handle.id)
            object.__setattr__(pending, "enqueued_at", timezone.now())
            result = pending
        task_enqueued.send(type(self), task_result=result)
        return result

    def joined_connection(self, using: str) -> object | None:
        """The DBAPI connection of Django's database ``using`` when it is inside an atomic
        block and the queue lives in that database (SQLite or PostgreSQL), else None."""
        django_connection = connections[using]
        if not django_connection.in_atomic_block:
            return None
        if not shares_database(self.url, using):
            return None
        django_connection.ensure_connection()
        raw: object = django_connection.connection
        return raw

    # -- results ------------------------------------------------------------------------------

    def get_result(self, result_id: str) -> AnyTaskResult:
        info = self.queue.get(str(result_id))
        if info is None or info.name != JOB_NAME:
            raise TaskResultDoesNotExist(str(result_id))
        return task_result(info)

    async def aget_result(self, result_id: str) -> AnyTaskResult:
        get = sync_to_async(self.get_result, thread_sensitive=False)
        return await get(result_id)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or timezone.is_aware(moment):
        return moment
    return timezone.make_aware(moment)  # USE_TZ off: Django's naive times are local
