"""ConveyorBackend: Django tasks enqueued, run by a Conveyor worker, read back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conveyor import JobState
from tests.with_django.conftest import drain

pytestmark = pytest.mark.timeout(120)


def test_enqueue_runs_on_a_worker_and_get_result_reads_it_back(tasks: Any) -> None:
    from django.tasks import TaskResultStatus, default_task_backend

    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs, result.attempts) == ([2, 3], {}, 0)
    assert result == tasks.add.get_result(result.id)  # the stored job, read back
    info = default_task_backend.queue.get(result.id)
    assert info is not None and info.name == "django.task" and info.state is JobState.QUEUED
    assert tasks.ran == []  # nothing runs until a worker does

    drain()

    assert tasks.ran == ["add:2+3"]
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1
    assert result.errors == []
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert tasks.add.get_result(result.id).return_value == 5


def test_a_failing_task_is_failed_with_its_exception_and_traceback(tasks: Any) -> None:
    from django.tasks import TaskResultStatus

    result = tasks.explode.enqueue("no such thing")
    drain()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert len(result.errors) == 1
    assert result.errors[0].exception_class is LookupError
    assert result.errors[0].traceback.endswith("LookupError: no such thing\n")
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018


def test_priority_higher_runs_first_as_django_says(tasks: Any) -> None:
    from django.tasks import default_task_backend

    for label, priority in [("low", -10), ("middle", 0), ("high", 10), ("top", 100)]:
        result = tasks.record.using(priority=priority).enqueue(label)
        info = default_task_backend.queue.get(result.id)
        assert info is not None and info.priority == -priority  # Conveyor: lower first
    drain()
    assert tasks.ran == ["top", "high", "middle", "low"]


def test_run_after_schedules_the_job(tasks: Any) -> None:
    from django.tasks import TaskResultStatus, default_task_backend
    from django.utils import timezone

    later = timezone.now() + timedelta(hours=1)
    result = tasks.record.using(run_after=later).enqueue("later")
    info = default_task_backend.queue.get(result.id)
    assert info is not None and info.state is JobState.SCHEDULED
    assert abs((info.run_at - later).total_seconds()) < 0.01
    soon = tasks.record.using(run_after=timezone.now() - timedelta(seconds=1)).enqueue("due")
    drain()  # a burst worker does not wait for jobs scheduled later
    assert tasks.ran == ["due"]
    assert tasks.record.get_result(result.id).status == TaskResultStatus.READY
    assert tasks.record.get_result(result.id).task.run_after == later
    assert tasks.record.get_result(soon.id).status == TaskResultStatus.SUCCESSFUL


def test_queues_map_to_conveyor_queues(tasks: Any) -> None:
    from django.tasks import default_task_backend
    from django.tasks.exceptions import InvalidTask

    result = tasks.send_email.enqueue("ada@example.com")
    info = default_task_backend.queue.get(result.id)
    assert info is not None and info.queue == "emails"
    drain(queues=("default",))
    assert tasks.ran == []
    drain(queues=("emails",))
    assert tasks.ran == ["email:ada@example.com"]
    with pytest.raises(InvalidTask, match="Queue 'reports' is not valid"):
        tasks.record.using(queue_name="reports")
    with pytest.raises(InvalidTask, match="invalid queue name"):
        tasks.record.using(backend="elsewhere", queue_name="no spaces")


def test_the_backend_says_what_it_supports(django_setup: Any) -> None:
    from django.tasks import default_task_backend

    assert default_task_backend.supports_defer is True
    assert default_task_backend.supports_priority is True
    assert default_task_backend.supports_get_result is True
    assert default_task_backend.supports_async_task is True


async def test_async_tasks_and_aenqueue(tasks: Any) -> None:
    from asgiref.sync import sync_to_async
    from django.tasks import TaskResultStatus

    result = await tasks.async_double.aenqueue(21)
    assert result.status == TaskResultStatus.READY
    await sync_to_async(drain, thread_sensitive=False)()
    refreshed = await tasks.async_double.aget_result(result.id)
    assert refreshed.status == TaskResultStatus.SUCCESSFUL
    assert refreshed.return_value == 42
    assert tasks.ran == ["double:21"]


def test_takes_context_gets_the_task_result(tasks: Any) -> None:
    result = tasks.whoami.enqueue()
    drain()
    result.refresh()
    assert result.return_value == {"id": result.id, "attempt": 1}


def test_signals_are_sent(tasks: Any) -> None:
    from django.tasks.signals import task_enqueued, task_finished, task_started

    from conveyor.django import ConveyorBackend

    seen: list[tuple[str, str, str]] = []

    def receiver(name: str) -> Any:
        def receive(sender: type, task_result: Any, **kwargs: Any) -> None:
            assert sender is ConveyorBackend
            seen.append((name, task_result.id, str(task_result.status)))

        return receive

    receivers = {
        task_enqueued: receiver("enqueued"),
        task_started: receiver("started"),
        task_finished: receiver("finished"),
    }
    for signal, receive in receivers.items():
        signal.connect(receive)
    try:
        ok = tasks.add.enqueue(1, 1)
        bad = tasks.explode.enqueue("boom")
        drain()
    finally:
        for signal, receive in receivers.items():
            signal.disconnect(receive)
    assert seen == [
        ("enqueued", ok.id, "READY"),
        ("enqueued", bad.id, "READY"),
        ("started", ok.id, "RUNNING"),
        ("finished", ok.id, "SUCCESSFUL"),
        ("started", bad.id, "RUNNING"),
        ("finished", bad.id, "FAILED"),
    ]


def test_get_result_of_an_unknown_or_foreign_job(tasks: Any) -> None:
    from django.tasks import default_task_backend
    from django.tasks.exceptions import TaskResultDoesNotExist
    from pydantic import BaseModel

    from conveyor import job

    class Other(BaseModel):
        n: int

    other = job("other.job", Other)
    handle = default_task_backend.queue.enqueue(other, Other(n=1))
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(handle.id)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("no-such-job")


def test_arguments_must_be_json(tasks: Any) -> None:
    from django.tasks import default_task_backend
    from django.utils import timezone

    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.add.enqueue(timezone.now(), 1)
    assert default_task_backend.queue.list_jobs() == []


def test_tasks_use_the_orm_in_the_worker(tasks: Any) -> None:
    from django.db import connection, connections

    before = _count_signups(connection)
    results = [tasks.store.enqueue(f"orm-{n}@example.com") for n in range(3)]
    drain()
    assert [r.task.get_result(r.id).return_value for r in results] == [
        before + 1,
        before + 2,
        before + 3,
    ]
    assert _count_signups(connections["default"]) == before + 3


def _count_signups(connection: Any) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM signup")
        (count,) = cursor.fetchone()
    return int(count)


def test_where_the_queue_is(
    django_setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.tasks import task_backends

    from conveyor.django import ConveyorBackend
    from conveyor.django.urls import database_url, shares_database

    with pytest.raises(ImproperlyConfigured, match="needs OPTIONS 'url'"):
        ConveyorBackend("nowhere", {"OPTIONS": {}})
    env_url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("CONVEYOR_URL", env_url)
    assert ConveyorBackend("env", {"OPTIONS": {}}).url == env_url
    # The database named by OPTIONS wins over the environment; OPTIONS "url" over both.
    in_db = ConveyorBackend("db", {"OPTIONS": {"database": "default"}})
    assert in_db.url == f"sqlite:///{django_setup['sqlite_file']}"
    assert ConveyorBackend("url", {"OPTIONS": {"url": "redis://x:6379/0"}}).url.startswith("redis")
    pg_url = database_url("pg")
    assert pg_url.startswith("postgresql://") and "?" not in pg_url
    assert shares_database(task_backends["pg"].url, "pg")  # the same database, its own schema
    assert not shares_database(task_backends["pg"].url, "default")
    assert shares_database(task_backends["default"].url, "default")
    assert not shares_database(task_backends["elsewhere"].url, "default")
    assert not shares_database("redis://localhost:6379/0", "default")


def test_migrate_makes_the_tables_of_queues_in_the_migrated_database(
    django_setup: dict[str, Any], postgres_base_url: str
) -> None:
    import psycopg
    from django.core.management import call_command
    from django.test import override_settings

    from tests.conftest import drop_test_schema, postgres_test_url

    url = postgres_test_url(postgres_base_url)
    schema = url.rsplit("schema=", 1)[1]
    tasks_setting = {
        "fresh": {"BACKEND": "conveyor.django.ConveyorBackend", "OPTIONS": {"url": url}},
        "broken": {"BACKEND": "does.not.exist"},  # left to fail where it is used
    }
    try:
        with override_settings(TASKS=tasks_setting):
            call_command("migrate", database="default", verbosity=0)  # not where it lives
            assert not _schema_exists(psycopg, postgres_base_url, schema)
            call_command("migrate", database="pg", verbosity=0)
            assert _schema_exists(psycopg, postgres_base_url, schema)
    finally:
        drop_test_schema(url)


def _schema_exists(psycopg: Any, base: str, schema: str) -> bool:
    with psycopg.connect(base) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", [schema]
        ).fetchone()
    return bool(row[0])
