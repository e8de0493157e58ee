"""The Django app ``conveyor.django``: add it to ``INSTALLED_APPS`` for ``manage.py
conveyor_worker``, and so that ``manage.py migrate`` makes the tables of the queues that live
in the migrated database."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConveyorConfig(AppConfig):
    name = "conveyor.django"
    label = "conveyor_django"
    verbose_name = "Conveyor"

    def ready(self) -> None:
        post_migrate.connect(open_queues_in_database, sender=self)


def open_queues_in_database(using: str = "default", **kwargs: Any) -> None:
    """Open (so make the tables of) each ConveyorBackend queue that lives in database
    ``using``: on SQLite the first open needs the file's write lock, which a transaction that
    enqueues would already hold."""
    from django.conf import settings
    from django.tasks import task_backends
    from django.tasks.exceptions import InvalidTaskBackend

    from conveyor.django.backend import ConveyorBackend
    from conveyor.django.urls import shares_database

    for alias in getattr(settings, "TASKS", {}):
        try:
            backend = task_backends[alias]
        except InvalidTaskBackend:
            continue  # reported where the backend is used, not by migrate
        if isinstance(backend, ConveyorBackend) and shares_database(backend.url, using):
            queue = backend.queue
            queue.call(queue.queue.connect())
