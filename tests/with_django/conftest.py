"""Django for the ``conveyor.django`` tests: settings configured once per session, with a
SQLite database (whose file also holds the queue of the ``default`` backend), a PostgreSQL
database on the suite's private server (the ``pg`` backend's queue lives in it), and a queue
in a SQLite file of its own (``elsewhere``: not in any Django database)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import drop_test_schema, postgres_test_url

DRAIN_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def django_setup(
    postgres_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import django
    from django.conf import settings

    root: Path = tmp_path_factory.mktemp("django")
    sqlite_file = root / "app.db"
    pg_queue_url = postgres_test_url(postgres_base_url)
    from urllib.parse import unquote, urlsplit

    server = urlsplit(postgres_base_url)
    settings.configure(
        SECRET_KEY="tests",
        USE_TZ=True,
        INSTALLED_APPS=["conveyor.django"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(sqlite_file)},
            "pg": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": server.hostname,
                "PORT": server.port,
                "USER": unquote(server.username or ""),
                "PASSWORD": unquote(server.password or ""),
                "NAME": server.path.lstrip("/"),
            },
        },
        TASKS={
            "default": {
                "BACKEND": "conveyor.django.ConveyorBackend",
                "QUEUES": ["default", "emails"],
                "OPTIONS": {"database": "default"},
            },
            "pg": {
                "BACKEND": "conveyor.django.ConveyorBackend",
                "OPTIONS": {"url": pg_queue_url, "database": "pg"},
            },
            "elsewhere": {
                "BACKEND": "conveyor.django.ConveyorBackend",
                "QUEUES": [],
                "OPTIONS": {"url": f"sqlite:///{root / 'elsewhere.db'}"},
            },
        },
    )
    django.setup()
    from django.db import connections

    for alias in ("default", "pg"):
        with connections[alias].cursor() as cursor:
            cursor.execute("CREATE TABLE signup (email varchar(200) PRIMARY KEY)")
    # Open each queue before the first transaction: the first open makes its tables.
    from django.tasks import task_backends

    for alias in ("default", "pg", "elsewhere"):
        task_backends[alias].queue.counts()
    yield {"root": root, "sqlite_file": sqlite_file, "pg_queue_url": pg_queue_url}
    from conveyor.django.backend import _close_queues

    _close_queues()
    connections.close_all()
    drop_test_schema(pg_queue_url)


@pytest.fixture
def tasks(django_setup: dict[str, Any]) -> Iterator[Any]:
    """The test project's tasks module, its ``ran`` list emptied, every queue empty."""
    from django.tasks import task_backends

    from tests.with_django.project import tasks as module

    for alias in ("default", "pg", "elsewhere"):
        empty(task_backends[alias].queue)
    module.ran.clear()
    yield module


def empty(queue: Any) -> None:
    while jobs := queue.list_jobs(limit=1000):
        ids = [info.id for info in jobs]
        queue.cancel(ids)
        queue.delete(ids)


def drain(alias: str = "default", queues: tuple[str, ...] = ()) -> None:
    """Run a burst worker of the TASKS backend ``alias`` until its queues have nothing to run,
    in a thread with its own event loop (as ``manage.py conveyor_worker --burst`` would)."""
    from conveyor import WorkerConfig
    from conveyor.django import django_worker
    from conveyor.django.worker import backend_named

    config = WorkerConfig(burst=True, concurrency=1, lease_keeper="thread", poll_interval=0.05)
    worker = django_worker(backend_named(alias), queues=queues, config=config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(worker.run())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(DRAIN_TIMEOUT)
    assert not thread.is_alive(), "the burst worker did not drain its queues"
    if failure:
        raise failure[0]
