"""Real servers for the framework tests: uvicorn (ASGI) and werkzeug (WSGI) on free ports, each
in a thread of the test process, and the backends the tests run against."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from werkzeug.serving import BaseWSGIServer, make_server

from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url

START_TIMEOUT = 15.0


def backend_url(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh store of backend ``name`` for one test."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"
    if name == "redis":
        return redis_test_url(request.getfixturevalue("redis_base_url"))
    if name == "postgres":
        url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
        request.addfinalizer(lambda: drop_test_schema(url))
        return url
    raise AssertionError(name)


class Uvicorn:
    """uvicorn serving ``app`` (its lifespan included) on a free loopback port."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn")
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(START_TIMEOUT)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def __enter__(self) -> Uvicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Werkzeug:
    """werkzeug's threaded WSGI server serving ``app`` on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-werkzeug")
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(START_TIMEOUT)

    def __enter__(self) -> Werkzeug:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
