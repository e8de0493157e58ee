"""The README's Django section runs as written: its files are written out into a folder of
their own and its commands run there, in real processes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

README = Path(__file__).resolve().parents[2] / "README.md"
SRC = Path(__file__).resolve().parents[2] / "src"


def django_section() -> str:
    text = README.read_text()
    start = text.index("## Django\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_django_section_runs_as_written(tmp_path: Path) -> None:
    section = django_section()
    files = re.findall(r"```python\n# ([\w/]+\.py)\n(.*?)```", section, re.S)
    assert {name for name, _ in files} == {
        "mysite/settings.py",
        "shop/models.py",
        "shop/tasks.py",
        "shop/views.py",
        "manage.py",
    }
    for package in ("mysite", "shop"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, code in files:
        (tmp_path / name).write_text(code)
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line for line in block[1].splitlines() if line.strip()]
    assert len(commands) == 4
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(SRC)])

    def run(command: str) -> subprocess.CompletedProcess[str]:
        outputs = None
        for part in command.split(" && "):
            args = shlex.split(part)
            if args[0] == "python":
                args[0] = sys.executable
            outputs = subprocess.run(
                args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
            )
            assert outputs.returncode == 0, f"{part}\n{outputs.stdout}\n{outputs.stderr}"
        assert outputs is not None
        return outputs

    run(commands[0])  # makemigrations && migrate
    # (the last line: Django 6's shell first says what it imported automatically)
    result_id = run(commands[1]).stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[\w-]{16}", result_id), result_id
    worked = run(commands[2])
    assert "welcome, ada@example.com" in worked.stdout
    assert "reminded" not in worked.stdout  # scheduled three days ahead
    status = run(commands[3].replace("<id>", result_id)).stdout.strip().splitlines()[-1]
    assert status == "SUCCESSFUL welcomed ada@example.com"
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "conveyor"), "jobs", "ls", "--json"],
        cwd=tmp_path,
        env={**env, "CONVEYOR_URL": f"sqlite:///{tmp_path / 'site.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    states = sorted(job["state"] for job in __import__("json").loads(listing.stdout))
    assert states == ["completed", "scheduled"]
