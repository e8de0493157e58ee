"""Django's own ``tests/tasks`` suite (from the Django sdist) against ConveyorBackend, on SQLite
and on PostgreSQL: see ``suite/conveyor_tasks_adapter.py`` for how and what is left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import drop_test_schema, postgres_test_url
from tests.with_django.django_suite import SuiteRun, run_suite

pytestmark = pytest.mark.timeout(900)

# Django 6.0's tests/tasks has 71 tests in the five classes the adapter reuses; 10 are about
# Django's own backend classes (listed with reasons in NOT_APPLICABLE there).
EXPECTED_RAN = 61


def _check(run: SuiteRun) -> None:
    assert run.returncode == 0, run.output[-6000:]
    assert run.ran == EXPECTED_RAN, run.output[-6000:]
    assert run.passed == EXPECTED_RAN, run.output[-6000:]
    assert len(run.test_names) == EXPECTED_RAN
    classes = {name.rsplit(".", 2)[1] for name in run.test_names}
    assert classes == {
        "ConveyorImmediateBackendTestCase",
        "ConveyorImmediateBackendTransactionTestCase",
        "ConveyorDummyBackendTestCase",
        "ConveyorDummyBackendTransactionTestCase",
        "ConveyorTaskTestCase",
    }


def test_django_tasks_suite_on_sqlite(tmp_path: Path) -> None:
    run = run_suite("sqlite", f"sqlite:///{tmp_path / 'queue.db'}")
    _check(run)


def test_django_tasks_suite_on_postgresql(postgres_base_url: str) -> None:
    queue_url = postgres_test_url(postgres_base_url)
    try:
        run = run_suite(postgres_base_url, queue_url)
    finally:
        drop_test_schema(queue_url)
    _check(run)
