"""The README's "Changing a job during a rolling deploy" runs as written: each of its files is
written out and imported, then a job of the old code runs on a worker of the new one, and a job
of the new code meets a worker of the old one, on SQLite."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import JobContext, JobDef, JobState, Queue, Worker, WorkerConfig, job

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Changing a job during a rolling deploy"
FILE_BLOCK = re.compile(r"```python\n# deploy/(\w+)\.py\n(.*?)```", re.S)
NAME = "email.send_invite"


def section() -> str:
    text = README.read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.index("\n## ", start + 1)
    assert text[end:].startswith("\n## Job states\n"), "the section goes right before Job states"
    return text[start:end]


def snippet(tmp_path: Path, name: str) -> ModuleType:
    """The README's ``deploy/<name>.py``, written out and imported as a module of its own."""
    files = dict(FILE_BLOCK.findall(section()))
    assert set(files) == {"optional_field", "renamed_field", "versioned"}
    path = tmp_path / f"{name}.py"
    path.write_text(files[name])
    spec = importlib.util.spec_from_file_location(f"readme_deploy_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def queue(tmp_path: Path) -> Any:
    q = Queue.from_url(f"sqlite:///{tmp_path / 'deploy.db'}")
    await q.connect()
    try:
        yield q
    finally:
        await q.close()


async def drain(queue: Queue, definition: JobDef[Any, Any]) -> list[Any]:
    """Run a worker of ``definition`` until nothing is left to run; the payloads it got."""
    seen: list[Any] = []
    worker = Worker(queue, jobs=[definition], config=WorkerConfig(burst=True, poll_interval=0.05))

    @worker.handles(definition)
    async def handle(payload: Any, ctx: JobContext) -> None:
        seen.append(payload)

    await asyncio.wait_for(worker.run(), 30)
    return seen


def state_of(info: Any) -> JobState:
    assert info is not None
    state: JobState = info.state
    return state


async def test_an_optional_field_reads_both_ways(tmp_path: Path, queue: Queue) -> None:
    class OldInvite(BaseModel):
        to_email: str

    old = job(NAME, OldInvite)
    new = snippet(tmp_path, "optional_field")
    await queue.enqueue(old, OldInvite(to_email="ada@example.com"))
    [read] = await drain(queue, new.send_invite)
    assert read == new.SendInvite(to_email="ada@example.com", locale="en")
    # The new code's job on an old worker: the field it does not know is ignored.
    await queue.enqueue(new.send_invite, new.SendInvite(to_email="bob@example.com", locale="fr"))
    assert await drain(queue, old) == [OldInvite(to_email="bob@example.com")]


async def test_a_renamed_field_reads_the_jobs_of_the_old_name(tmp_path: Path, queue: Queue) -> None:
    class OldInvite(BaseModel):
        email: str

    old = job(NAME, OldInvite)
    new = snippet(tmp_path, "renamed_field")
    await queue.enqueue(old, OldInvite(email="ada@example.com"))
    written = await queue.enqueue(new.send_invite, new.SendInvite(to_email="bob@example.com"))
    info = await queue.get(written.id)
    assert info is not None and info.payload == {"to_email": "bob@example.com"}  # the new name
    seen = await drain(queue, new.send_invite)
    assert [p.to_email for p in seen] == ["ada@example.com", "bob@example.com"]


async def test_a_versioned_shape_change_upgrades_old_jobs_and_old_workers_hand_new_ones_back(
    tmp_path: Path, queue: Queue
) -> None:
    class OldInvite(BaseModel):
        to_email: str
        first: str
        last: str

    old = job(NAME, OldInvite)
    new = snippet(tmp_path, "versioned")
    await queue.enqueue(old, OldInvite(to_email="ada@example.com", first="Ada", last="Lovelace"))
    [read] = await drain(queue, new.send_invite)
    assert read == new.SendInvite(to_email="ada@example.com", full_name="Ada Lovelace")

    # The error the README quotes: an upgrade that raises fails only its job, at once.
    broken = await queue.enqueue_by_name(NAME, {"to_email": "x@example.com", "first": "X"})
    assert await drain(queue, new.send_invite) == []
    info = await queue.get(broken.id)
    assert info is not None and state_of(info) is JobState.FAILED and info.attempt == 1
    assert info.error is not None
    assert info.error.startswith(
        "PayloadValidationError: invalid payload for job 'email.send_invite': its upgrade "
        "function raised KeyError: 'last' (upgrading a payload of version 1 to version 2)"
    )
    assert "PayloadValidationError: invalid payload for job" in section()
    assert "its upgrade function raised KeyError: 'last' (upgrading a payload of" in section()

    # A new job on an old worker: handed back, attempt given back, not failed.
    newer = await queue.enqueue(
        new.send_invite, new.SendInvite(to_email="bob@example.com", full_name="Bob Smith")
    )
    assert (await queue.get(newer.id) or info).headers["conveyor-version"] == "2"
    assert await drain(queue, old) == []
    info = await queue.get(newer.id)
    assert info is not None and state_of(info) is JobState.SCHEDULED and info.attempt == 0
    assert info.error is not None and info.error.startswith("NewerJobVersion: ")
    # By name, a producer that writes the current shape says so.
    by_name = await queue.enqueue_by_name(
        NAME, {"to_email": "eve@example.com", "full_name": "Eve Doe"}, version=2
    )
    assert [p.full_name for p in await drain(queue, new.send_invite)] == ["Eve Doe"]
    info = await queue.get(by_name.id)
    assert info is not None and state_of(info) is JobState.COMPLETED


def test_the_section_links_the_paragraph_on_unknown_names() -> None:
    text = README.read_text()
    assert "(#3-handle)" in section() and "\n### 3. Handle\n" in text
    assert "**A job name the worker has no handler for**" in text
