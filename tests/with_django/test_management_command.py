"""``manage.py conveyor_worker`` in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SETTINGS = """
SECRET_KEY = "tests"
USE_TZ = True
INSTALLED_APPS = ["conveyor.django"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
TASKS = {{
    "default": {{
        "BACKEND": "conveyor.django.ConveyorBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {{"database": "default"}},
    }}
}}
"""

TASKS = """
from pathlib import Path

from django.tasks import task


@task
def write(path: str, text: str) -> int:
    Path(path).write_text(text)
    return len(text)


@task(queue_name="emails")
def shout(text: str) -> str:
    return text.upper()
"""


def _project(tmp_path: Path) -> dict[str, str]:
    package = tmp_path / "site_project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(SETTINGS.format(db=str(tmp_path / "site.db")))
    (package / "tasks.py").write_text(TASKS)
    root = Path(__file__).resolve().parents[2]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "site_project.settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root / "src")]),
    }


def _python(env: dict[str, str], code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_conveyor_worker_runs_the_tasks_and_exits_when_drained(tmp_path: Path) -> None:
    env = _project(tmp_path)
    out = tmp_path / "out.txt"
    ids = _python(
        env,
        f"""
        import django
        django.setup()
        from site_project.tasks import shout, write
        print(write.enqueue({str(out)!r}, "hello").id, shout.enqueue("hi").id)
        """,
        tmp_path,
    ).split()
    worker = subprocess.run(
        [sys.executable, "-m", "django", "conveyor_worker", "--burst", "--concurrency", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    assert "job completed" in worker.stderr
    assert out.read_text() == "hello"
    results = _python(
        env,
        f"""
        import django
        django.setup()
        from site_project.tasks import shout, write
        w, s = write.get_result({ids[0]!r}), shout.get_result({ids[1]!r})
        print(w.status, w.return_value, s.status, s.return_value)
        """,
        tmp_path,
    )
    assert results == "SUCCESSFUL 5 SUCCESSFUL HI"


def test_conveyor_worker_serves_only_the_queues_it_is_given(tmp_path: Path) -> None:
    env = _project(tmp_path)
    job_id = _python(
        env,
        """
        import django
        django.setup()
        from site_project.tasks import shout
        print(shout.enqueue("later").id)
        """,
        tmp_path,
    )
    command = [sys.executable, "-m", "django", "conveyor_worker", "--burst", "-v", "0"]
    subprocess.run([*command, "--queue", "default"], env=env, cwd=tmp_path, check=True, timeout=60)
    check = f"""
        import django
        django.setup()
        from site_project.tasks import shout
        print(shout.get_result({job_id!r}).status)
        """
    assert _python(env, check, tmp_path) == "READY"
    subprocess.run([*command, "--queue", "emails"], env=env, cwd=tmp_path, check=True, timeout=60)
    assert _python(env, check, tmp_path) == "SUCCESSFUL"


def test_conveyor_worker_refuses_a_backend_that_is_not_conveyor(tmp_path: Path) -> None:
    env = _project(tmp_path)
    (tmp_path / "site_project" / "settings.py").write_text(
        SETTINGS.format(db=str(tmp_path / "site.db"))
        + '\nTASKS["dummy"] = {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "django", "conveyor_worker", "--backend", "dummy"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "TASKS['dummy'] is DummyBackend, not conveyor.django.ConveyorBackend" in done.stderr
