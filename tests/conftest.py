"""Fixtures shared by every test directory."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conveyor.backends.registry import driver_for_url
from conveyor.drivers.protocol import Driver
from tests.servers.postgres_server import PostgresServer
from tests.servers.redis_server import RedisClusterServers, RedisServer

# pytester runs pytest on a test file written out by a test: how conveyor.testing, a pytest
# plugin, is tested as its users use it.
pytest_plugins = ["pytester", "conveyor.testing"]
# The Django integration needs Django 6, so Python 3.12+: its tests run in a virtualenv of
# their own (make test), and are not collected where Django is not installed.
collect_ignore = [] if importlib.util.find_spec("django") else ["with_django"]

BACKENDS = ["memory", "sqlite", "redis", "redis-cluster", "postgres"]

# A suite started in the background by a shell without job control (`make test &`, CI runners)
# inherits SIGINT ignored, and every process a test starts would inherit that too: Python then
# installs no KeyboardInterrupt handler, and a server a test stops with Ctrl-C never stops. The
# processes tests start are to behave as from a terminal.
if (
    signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    and threading.current_thread() is threading.main_thread()
):
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what the CLI does to the process when a test runs it in-process: it exports
    ``CONVEYOR_URL`` and installs its own handler on the ``conveyor`` logger."""
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    logger = logging.getLogger("conveyor")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """A Redis server for the whole test session: ``$CONVEYOR_TEST_REDIS_URL``, else a private
    one started here (on a free port, in a temporary directory) and stopped at the end. Tests
    share it safely because each one uses its own key prefix."""
    given = os.environ.get("CONVEYOR_TEST_REDIS_URL")
    if given:
        yield given
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster of three masters on loopback ports, started for the test session."""
    with RedisClusterServers(masters=3) as cluster:
        yield f"redis+cluster://127.0.0.1:{cluster.seed_port}/0"


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    """A PostgreSQL server for the whole test session: ``$CONVEYOR_TEST_POSTGRES_URL``, else a
    private one started here and stopped at the end. Tests share it safely because each one
    uses its own schema (:func:`postgres_test_url`)."""
    given = os.environ.get("CONVEYOR_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    with PostgresServer() as server:
        yield server.url


def postgres_test_url(base: str) -> str:
    """A URL of ``base`` with a schema of its own (created when the driver opens)."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}schema=test_{uuid.uuid4().hex[:12]}"


def drop_test_schema(url: str) -> None:
    """Drop the schema a test made (only ever a ``test_`` one), so that a server given by
    ``$CONVEYOR_TEST_POSTGRES_URL`` does not fill up with them."""
    import psycopg

    base, _, query = url.partition("?")
    schemas = [p[len("schema=") :] for p in query.split("&") if p.startswith("schema=")]
    if not schemas or not schemas[0].startswith("test_"):
        return
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schemas[0]}" CASCADE')


def redis_test_url(base: str) -> str:
    """A URL of ``base`` whose keys no other test touches."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}prefix=test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def backend_url(backend_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, isolated store for one test."""
    if backend_name == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if backend_name == "sqlite":
        return f"sqlite:///{tmp_path / 'conveyor.db'}"
    if backend_name == "redis":
        return redis_test_url(request.getfixturevalue("redis_base_url"))
    if backend_name == "redis-cluster":
        return redis_test_url(request.getfixturevalue("redis_cluster_url"))
    if backend_name == "postgres":
        url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
        request.addfinalizer(lambda: drop_test_schema(url))
        return url
    raise AssertionError(backend_name)


@pytest.fixture
async def driver(backend_url: str) -> AsyncIterator[Driver]:
    d = driver_for_url(backend_url)
    await d.open()
    try:
        yield d
    finally:
        await d.close()
