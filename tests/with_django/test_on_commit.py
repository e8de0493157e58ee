"""enqueue_on_commit and enqueues inside Django's transactions, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import JobState, PayloadValidationError, job
from tests.with_django.conftest import drain

pytestmark = pytest.mark.timeout(120)


class Welcome(BaseModel):
    email: str


welcome = job("tests.welcome", Welcome)


class Rollback(Exception):
    pass


def _signup(using: str, email: str) -> None:
    from django.db import connections

    with connections[using].cursor() as cursor:
        cursor.execute("INSERT INTO signup (email) VALUES (%s)", [email])


def _exists(using: str, email: str) -> bool:
    from django.db import connections

    with connections[using].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM signup WHERE email = %s", [email])
        row = cursor.fetchone()
    return bool(row and row[0])


# (the TASKS backend, the Django database) where the queue lives in that database
JOINED = [("default", "default"), ("pg", "pg")]


@pytest.mark.parametrize(("backend", "using"), JOINED, ids=["sqlite", "postgresql"])
def test_a_task_enqueued_on_commit_exists_once_the_transaction_commits(
    tasks: Any, backend: str, using: str
) -> None:
    from django.db import transaction
    from django.tasks import task_backends

    from conveyor.django import enqueue_on_commit

    queue = task_backends[backend].queue
    add = tasks.add.using(backend=backend)
    with transaction.atomic(using=using):
        _signup(using, f"commit-{backend}@example.com")
        job_id = enqueue_on_commit(add, 20, 22, using=using)
        # Written by Django's connection, in its transaction: nobody else sees it yet.
        assert queue.get(job_id) is None
    info = queue.get(job_id)
    assert info is not None and info.state is JobState.QUEUED
    assert _exists(using, f"commit-{backend}@example.com")
    drain(backend)
    assert add.get_result(job_id).return_value == 42


@pytest.mark.parametrize(("backend", "using"), JOINED, ids=["sqlite", "postgresql"])
def test_a_rolled_back_transaction_leaves_no_task(tasks: Any, backend: str, using: str) -> None:
    from django.db import transaction
    from django.tasks import task_backends

    from conveyor.django import enqueue_on_commit

    queue = task_backends[backend].queue
    with pytest.raises(Rollback), transaction.atomic(using=using):
        _signup(using, f"rollback-{backend}@example.com")
        job_id = enqueue_on_commit(tasks.add.using(backend=backend), 1, 2, using=using)
        # Enqueued through the backend as well: joins the same transaction.
        other = tasks.add.using(backend=backend).enqueue(3, 4)
        raise Rollback
    assert queue.get(job_id) is None
    assert queue.get(other.id) is None
    assert queue.list_jobs() == []
    assert not _exists(using, f"rollback-{backend}@example.com")


@pytest.mark.parametrize(("backend", "using"), JOINED, ids=["sqlite", "postgresql"])
def test_conveyor_jobs_on_commit(tasks: Any, backend: str, using: str) -> None:
    from django.db import transaction
    from django.tasks import task_backends

    from conveyor.django import enqueue_on_commit

    queue = task_backends[backend].queue
    with transaction.atomic(using=using):
        kept = enqueue_on_commit(welcome, Welcome(email="a@example.com"), queue=queue, using=using)
        assert queue.get(kept) is None
    with pytest.raises(Rollback), transaction.atomic(using=using):
        dropped = enqueue_on_commit(
            welcome, Welcome(email="b@example.com"), queue=queue, using=using, priority=3
        )
        raise Rollback
    info = queue.get(kept)
    assert info is not None and info.name == "tests.welcome"
    assert info.payload == {"email": "a@example.com"}
    assert queue.get(dropped) is None


def test_a_queue_outside_the_database_is_enqueued_by_on_commit(tasks: Any) -> None:
    """The ``elsewhere`` queue is not in a Django database: the id is chosen at once and the
    job enqueued when the transaction commits, never for a rollback."""
    from django.db import transaction
    from django.tasks import task_backends

    from conveyor.django import enqueue_on_commit

    queue = task_backends["elsewhere"].queue
    add = tasks.add.using(backend="elsewhere")
    with transaction.atomic():
        job_id = enqueue_on_commit(add, 5, 6)
        assert queue.get(job_id) is None
    info = queue.get(job_id)
    assert info is not None and info.state is JobState.QUEUED
    with pytest.raises(Rollback), transaction.atomic():
        dropped = enqueue_on_commit(add, 7, 8)
        dropped_job = enqueue_on_commit(welcome, Welcome(email="c@example.com"), queue=queue)
        raise Rollback
    assert queue.get(dropped) is None and queue.get(dropped_job) is None
    drain("elsewhere")
    assert add.get_result(job_id).return_value == 11


def test_outside_a_transaction_it_enqueues_at_once(tasks: Any) -> None:
    from django.tasks import task_backends

    from conveyor.django import enqueue_on_commit

    for alias in ("default", "elsewhere"):
        job_id = enqueue_on_commit(tasks.add.using(backend=alias), 1, 1)
        assert task_backends[alias].queue.get(job_id) is not None


def test_a_bad_task_or_payload_is_refused_before_the_commit(tasks: Any) -> None:
    from django.db import transaction
    from django.tasks import task_backends
    from django.tasks.exceptions import InvalidTask

    from conveyor.django import enqueue_on_commit

    with transaction.atomic():
        with pytest.raises(TypeError, match="Unsupported type"):
            enqueue_on_commit(tasks.add, object(), 1)
        with pytest.raises(TypeError, match="Unsupported type"):
            enqueue_on_commit(tasks.add.using(backend="elsewhere"), object(), 1)
        with pytest.raises(PayloadValidationError, match="expected an instance of Welcome"):
            enqueue_on_commit(welcome, {"email": "x"})
        with pytest.raises(PayloadValidationError, match="expected an instance of Welcome"):
            enqueue_on_commit(welcome, {"email": "x"}, queue=task_backends["elsewhere"].queue)
        with pytest.raises(TypeError, match="a Django @task or a Conveyor job definition"):
            enqueue_on_commit(print)
    with pytest.raises(InvalidTask):
        enqueue_on_commit(tasks.add.using(queue_name="nope"), 1, 1)
