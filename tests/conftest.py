"""Fixtures shared by every test directory."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor.backends.registry import driver_for_url
from conveyor.drivers.protocol import Driver

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(autouse=True)
def _isolated_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what the CLI does to the process when a test runs it in-process: it exports
    ``CONVEYOR_URL`` and installs its own handler on the ``conveyor`` logger."""
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    logger = logging.getLogger("conveyor")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_url(backend_name: str, tmp_path: Path) -> str:
    """A fresh, isolated store for one test."""
    if backend_name == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if backend_name == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    raise AssertionError(backend_name)


@pytest.fixture
async def driver(backend_url: str) -> AsyncIterator[Driver]:
    d = driver_for_url(backend_url)
    await d.open()
    try:
        yield d
    finally:
        await d.close()
