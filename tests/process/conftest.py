"""Fixtures of the process tests; the harness itself lives in :mod:`tests.process.harness`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url
from tests.process.harness import Harness


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def harness(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "redis":
        url = redis_test_url(request.getfixturevalue("redis_base_url"))
    elif request.param == "postgres":
        url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
        request.addfinalizer(lambda: drop_test_schema(url))
    else:
        # Not ``conveyor.db``: the default URL, relative to the workers' working directory (this
        # one), must not reach the same file if the CLI failed to export ``--url``.
        url = f"sqlite:///{tmp_path / 'queue.db'}"  # absolute path: sqlite:////tmp/...
    h = Harness(tmp_path, url)
    try:
        yield h
    finally:
        h.kill_all()
        h.queue.close()
