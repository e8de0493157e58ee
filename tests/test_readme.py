"""The README's tour runs: its modules are written out as a package, imported and exercised.

The handler's ``repo`` and ``mailer`` are the reader's own services; the test supplies fakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from tests.conftest import redis_test_url

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```python\n# (app/\w+\.py)[^\n]*\n(.*?)```", re.S)


@pytest.fixture(params=["sqlite", "redis"])
def app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[dict[str, ModuleType]]:
    blocks = BLOCK.findall(README.read_text())
    assert {name for name, _ in blocks} >= {"app/jobs.py", "app/api.py", "app/worker.py"}
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    for name, code in blocks:
        (tmp_path / name).write_text(code)
    if request.param == "redis":
        url = redis_test_url(request.getfixturevalue("redis_base_url"))
    else:
        url = f"sqlite:///{tmp_path / 'readme.db'}"
    monkeypatch.setenv("CONVEYOR_URL", url)
    monkeypatch.syspath_prepend(str(tmp_path))
    for cached in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
        monkeypatch.delitem(sys.modules, cached)
    names = [name.removesuffix(".py").replace("/", ".") for name, _ in blocks]
    modules = {name: importlib.import_module(name) for name in names}
    yield modules
    for name in names:
        sys.modules.pop(name, None)


class FakeRepo:
    async def get(self, invitation_id: uuid.UUID) -> object | None:
        return None if invitation_id.int == 0 else SimpleNamespace(id=invitation_id)


class FakeMailer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, to_email: str) -> None:
        self.sent.append(to_email)


def test_the_tour_enqueues_handles_and_inspects(app: dict[str, ModuleType]) -> None:
    jobs, api, worker_module = app["app.jobs"], app["app.api"], app["app.worker"]
    mailer = FakeMailer()
    worker_module.repo = FakeRepo()  # type: ignore[attr-defined]
    worker_module.mailer = mailer  # type: ignore[attr-defined]
    worker = worker_module.worker
    worker.check()  # every definition in app/jobs.py has a handler

    async def tour() -> None:
        invitation = uuid.uuid4()
        job_id = await api.invite(invitation, "ada@example.com")
        assert job_id == f"invite-email:{invitation}"
        again = await api.queue.enqueue(
            jobs.send_invite,
            jobs.SendInvite(invitation_id=invitation, to_email="ada@example.com"),
            job_id=job_id,
        )
        assert again.duplicate  # the same id writes nothing new
        delayed = await api.queue.get(job_id)
        assert delayed is not None and delayed.state.value == "scheduled"
        assert delayed.priority == 5

        now = await api.queue.enqueue(
            jobs.send_invite, jobs.SendInvite(invitation_id=uuid.uuid4(), to_email="b@example.com")
        )
        missing = await api.queue.enqueue(
            jobs.send_invite, jobs.SendInvite(invitation_id=uuid.UUID(int=0), to_email="c@x.org")
        )
        worker.config = dataclasses.replace(worker.config, burst=True)
        await asyncio.wait_for(worker.run(), 30)
        assert await now.result(timeout=5) == "sent"
        failed = await missing.info()
        assert failed.state.value == "failed" and "invitation not found" in (failed.error or "")
        await api.queue.close()
        await worker.queue.close()

    asyncio.run(tour())
    assert mailer.sent == ["b@example.com"]

    views = app.get("app.views")
    assert views is not None
    job_id = views.invite_view(None, uuid.uuid4(), "sync@example.com")
    assert views.sync_queue.get(job_id) is not None
    views.sync_queue.close()
