"""Django's own ``tests/tasks`` suite, from the Django sdist, run against ConveyorBackend.

The sdist of the installed Django version is downloaded once (``pip download --no-binary``)
into ``<venv>/django-src/``; its ``tests/`` directory is extracted beside it, the adapter
(``suite/conveyor_tasks_adapter.py``) is copied in as ``tasks/test_conveyor_backend.py`` with
its settings module, and Django's ``tests/runtests.py`` runs it.

``python -m tests.with_django.django_suite [sqlite|postgresql://...]`` runs it by hand.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import django

HERE = Path(__file__).resolve().parent
SUITE_MODULE = "tasks.test_conveyor_backend"


def cache_dir() -> Path:
    """Inside the virtualenv running the tests, so ``make clean`` removes it with the venv."""
    return Path(sys.prefix) / "django-src"


def django_tests_dir() -> Path:
    """The sdist's ``tests/`` directory for the installed Django, fetched the first time (by
    one process: test workers running in parallel wait for it)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tests = _fetch_tests_dir()
        adapter = tests / "tasks" / "test_conveyor_backend.py"
        _install(HERE / "suite" / "conveyor_tasks_adapter.py", adapter)
        _install(HERE / "suite" / "conveyor_settings.py", tests / "conveyor_settings.py")
        return tests


def _install(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` unless it is there already (another test worker may be
    running Django's suite from that very file)."""
    text = source.read_text()
    if not target.exists() or target.read_text() != text:
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(text)
        staged.replace(target)


def _fetch_tests_dir() -> Path:
    version = django.get_version()
    root = cache_dir() / f"django-{version}"
    tests = root / "tests"
    if (tests / "runtests.py").exists() and (tests / "tasks").is_dir():
        return tests
    cache_dir().mkdir(parents=True, exist_ok=True)
    archive = cache_dir() / f"django-{version}.tar.gz"
    if not archive.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"django=={version}",
                "-d",
                str(cache_dir()),
            ],
            check=True,
            timeout=300,
        )
    staging = cache_dir() / f"staging-{os.getpid()}"
    with tarfile.open(archive) as sdist:
        members = [m for m in sdist.getmembers() if m.name.startswith(f"django-{version}/tests/")]
        sdist.extractall(staging, members=members, filter="data")
    shutil.rmtree(root, ignore_errors=True)
    (staging / f"django-{version}").rename(root)
    shutil.rmtree(staging, ignore_errors=True)
    return tests


@dataclass(frozen=True)
class SuiteRun:
    returncode: int
    output: str
    ran: int
    failures: int
    errors: int
    skipped: int
    test_names: list[str]  # every test the runner started, as module.Class.method

    @property
    def passed(self) -> int:
        return self.ran - self.failures - self.errors - self.skipped


def run_suite(database: str, conveyor_url: str, *, timeout: float = 600) -> SuiteRun:
    """Run the adapter with Django's runner: ``database`` is ``sqlite`` or a PostgreSQL URL
    (see ``suite/conveyor_settings.py``), ``conveyor_url`` the queue's URL."""
    tests = django_tests_dir()
    env = {
        **os.environ,
        "CONVEYOR_SUITE_DATABASE": database,
        "CONVEYOR_URL": conveyor_url,
        "PYTHONPATH": os.pathsep.join([str(tests), *sys.path[1:]]),
    }
    env.pop("REDIS_URL", None)
    completed = subprocess.run(
        [
            sys.executable,
            "runtests.py",
            SUITE_MODULE,
            "--settings=conveyor_settings",
            "--parallel=1",
            "--noinput",
            "-v",
            "2",
        ],
        cwd=tests,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = completed.stdout + completed.stderr
    ran = _count(r"^Ran (\d+) tests? in", output)
    summary = re.search(r"^(OK|FAILED)(?: \((.*)\))?$", output, re.MULTILINE)
    details = dict(
        (key, int(value))
        for key, value in re.findall(r"(\w+)=(\d+)", summary.group(2) or "" if summary else "")
    )
    started = re.findall(r"^(test\w+) \((\S+?)\.test\w+\) \.\.\. ", output, re.MULTILINE)
    return SuiteRun(
        returncode=completed.returncode,
        output=output,
        ran=ran,
        failures=details.get("failures", 0),
        errors=details.get("errors", 0),
        skipped=details.get("skipped", 0),
        test_names=[f"{cls}.{name}" for name, cls in started],
    )


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.MULTILINE)
    return int(found.group(1)) if found else -1


if __name__ == "__main__":
    database = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    url = os.environ.get("CONVEYOR_URL", "sqlite:////tmp/conveyor-django-suite.db")
    result = run_suite(database, url)
    print(result.output)
    sys.exit(result.returncode)
