"""The dashboard served by a real uvicorn on a free port, in a thread of the test process, and
the jobs, workers and failures the tests look at, made by a real queue and a real worker."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from pydantic import BaseModel, SecretStr

from conveyor import JobContext, Queue, Worker, job
from conveyor.dashboard import DashboardAuth, conveyor_dashboard
from tests.conformance.worker.helpers import WAIT_TIMEOUT, fast_config

START_TIMEOUT = 15.0


class Note(BaseModel):
    text: str


class Login(BaseModel):
    user: str
    password: SecretStr


note = job("dash.note", Note, result=str, queue="emails", attempts=1)
boom = job("dash.boom", Note, queue="emails", attempts=1)
login = job("dash.login", Login, queue="emails")


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Server:
    """uvicorn serving ``app`` on ``host`` in a thread; stopped by :meth:`stop`."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="dashboard-uvicorn")
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(START_TIMEOUT)


@dataclass
class Dash:
    """A served dashboard of the queue at ``url`` and a client logged in to it."""

    url: str
    base: str
    client: httpx.Client

    def csrf(self, path: str = "/") -> str:
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text) or re.search(
            r'"X-CSRF-Token": "([0-9a-f]+)"', page.text
        )
        assert found is not None
        return found[1]

    def act(self, action: str, data: dict[str, str], *, htmx: bool = True) -> httpx.Response:
        token = self.csrf()
        headers = {"HX-Request": "true"} if htmx else {}
        return self.client.post(f"/actions/{action}", data={**data, "csrf": token}, headers=headers)


ServeFn = Callable[..., Dash]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'q.db'}"


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """``serve(url, auth=None, host="127.0.0.1", **options)``: the dashboard of ``url`` on a
    real server, with an httpx client on it (no credentials sent unless the test adds them)."""
    servers: list[Server] = []
    clients: list[httpx.Client] = []

    def start(
        url: str, *, auth: DashboardAuth | None = None, host: str = "127.0.0.1", **options: Any
    ) -> Dash:
        app = conveyor_dashboard(Queue.from_url(url), auth=auth, refresh_seconds=0.5, **options)
        server = Server(app, host)
        servers.append(server)
        client = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
        clients.append(client)
        return Dash(url, server.url, client)

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one to bind."""
    candidates: list[str] = []
    try:
        candidates += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks a source address
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    for address in candidates:
        if ":" in address or address.startswith("127.") or address == "0.0.0.0":
            continue
        with socket.socket() as s:
            try:
                s.bind((address, 0))
            except OSError:
                continue
        return str(address)
    return None


async def enqueue_notes(url: str, texts: list[str]) -> list[str]:
    async with Queue.from_url(url) as queue:
        handles = await queue.enqueue_many([note.request(Note(text=t)) for t in texts])
        return [h.id for h in handles]


async def make_failed(url: str, count: int, *, name: str = "boom") -> list[str]:
    """``count`` jobs of ``dash.boom`` failed for good by a real worker."""
    async with Queue.from_url(url) as queue:
        handles = await queue.enqueue_many([boom.request(Note(text=name)) for _ in range(count)])
        worker = Worker(queue, jobs=[boom, note, login], config=fast_config(burst=True))

        @worker.handles(boom)
        async def explode(payload: Note, ctx: JobContext) -> None:
            raise RuntimeError(f"<b>exploded</b> on {payload.text}")

        @worker.handles(note)
        async def keep(payload: Note, ctx: JobContext) -> str:
            return payload.text

        @worker.handles(login)
        async def log_in(payload: Login, ctx: JobContext) -> None:
            return None

        await asyncio.wait_for(worker.run(), WAIT_TIMEOUT)
        return [h.id for h in handles]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
