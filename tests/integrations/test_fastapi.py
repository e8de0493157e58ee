"""conveyor.fastapi: an app served by a real uvicorn enqueues through the dependency, a real
worker runs the jobs, and the lifespan opens and closes the queue whatever the app's own
lifespan does."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conveyor import JobContext, JobState, Queue, Worker, job
from conveyor.backends.registry import driver_for_url
from conveyor.dashboard import DashboardAuth, conveyor_dashboard
from conveyor.engine import Engine
from conveyor.fastapi import QueueDep, QueueNotConfigured, conveyor_lifespan, get_queue
from tests.conformance.worker.helpers import fast_config
from tests.integrations.servers import Uvicorn, backend_url


class SendInvite(BaseModel):
    to_email: str


send_invite = job("fastapi.send_invite", SendInvite, result=str, queue="emails")


class ClosingQueue(Queue):
    """A queue that notes how often it was connected and closed."""

    def __init__(self, url: str) -> None:
        super().__init__(driver_for_url(url))
        self.connects = 0
        self.closes = 0

    async def connect(self) -> Engine:
        self.connects += 1
        return await super().connect()

    async def close(self) -> None:
        self.closes += 1
        await super().close()


def invitations_app(queue: Queue, events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def inner(app: FastAPI) -> AsyncGenerator[None]:
        # The queue is open before the app's own startup, which may therefore enqueue.
        events.append(f"inner start, queue is app.state's: {app.state.conveyor_queue is queue}")
        yield
        events.append("inner stop")

    app = FastAPI(lifespan=conveyor_lifespan(queue, inner))

    @app.post("/invitations")
    async def invite(body: SendInvite, queue: QueueDep) -> dict[str, str]:
        handle = await queue.enqueue(send_invite, body)
        return {"job_id": handle.id}

    @app.get("/jobs/{job_id}")
    async def show(job_id: str, request: Request) -> dict[str, str]:
        info = await get_queue(request).get(job_id)
        return {"state": "missing" if info is None else info.state.value}

    app.mount("/dashboard", conveyor_dashboard(queue))
    return app


async def run_worker(url: str, sent: list[str]) -> None:
    async with Queue.from_url(url) as queue:
        worker = Worker(queue, config=fast_config(burst=True))

        @worker.handles(send_invite)
        async def handle(payload: SendInvite, ctx: JobContext) -> str:
            sent.append(payload.to_email)
            return f"sent to {payload.to_email}"

        async with asyncio.timeout(30):
            await worker.run()


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgres"])
def test_an_endpoint_enqueues_through_the_dependency_and_a_worker_runs_the_job(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = backend_url(backend, tmp_path, request)
    queue = ClosingQueue(url)
    events: list[str] = []
    with (
        Uvicorn(invitations_app(queue, events)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        assert queue.connects >= 1 and queue.closes == 0
        assert events == ["inner start, queue is app.state's: True"]
        ids = [
            client.post("/invitations", json={"to_email": f"{n}@example.com"}).json()["job_id"]
            for n in range(3)
        ]
        assert [client.get(f"/jobs/{i}").json() for i in ids] == [{"state": "queued"}] * 3
        assert client.post("/invitations", json={"to_email": 5}).status_code == 422

        sent: list[str] = []
        asyncio.run(run_worker(url, sent))
        assert sorted(sent) == [f"{n}@example.com" for n in range(3)]
        assert [client.get(f"/jobs/{i}").json() for i in ids] == [{"state": "completed"}] * 3
        # The dashboard mounted beside the app, on the same queue (loopback: no credentials).
        page = client.get("/dashboard/queues/emails")
        assert page.status_code == 200 and "fastapi.send_invite" in page.text
    assert events[-1] == "inner stop"
    assert queue.closes == 1


async def test_the_queue_is_closed_when_the_inner_lifespan_fails_at_startup(
    tmp_path: Path,
) -> None:
    queue = ClosingQueue(f"sqlite:///{tmp_path / 'q.db'}")

    @asynccontextmanager
    async def broken(app: Starlette) -> AsyncGenerator[None]:
        raise RuntimeError("the database is down")
        yield

    app = Starlette(lifespan=conveyor_lifespan(queue, broken))
    with pytest.raises(RuntimeError, match="the database is down"):
        async with app.router.lifespan_context(app):
            pass
    assert (queue.connects, queue.closes) == (1, 1)


async def test_the_queue_is_closed_when_the_inner_lifespan_fails_at_shutdown(
    tmp_path: Path,
) -> None:
    queue = ClosingQueue(f"sqlite:///{tmp_path / 'q.db'}")

    @asynccontextmanager
    async def broken(app: Starlette) -> AsyncGenerator[Mapping[str, Any]]:
        yield {"ready": True}
        raise RuntimeError("flushing failed")

    app = Starlette(lifespan=conveyor_lifespan(queue, broken))
    with pytest.raises(RuntimeError, match="flushing failed"):
        async with app.router.lifespan_context(app) as state:
            assert state == {"ready": True}  # the inner lifespan's state is passed on
            assert get_queue(_request(app)) is queue
    assert queue.closes == 1


def _request(app: Starlette) -> Request:
    return Request({"type": "http", "app": app, "method": "GET", "path": "/", "headers": []})


async def test_a_request_to_an_app_without_the_lifespan_gets_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(queue: QueueDep) -> str:
        return queue.url

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        with pytest.raises(QueueNotConfigured, match=r"FastAPI\(lifespan=conveyor_lifespan"):
            await client.get("/")


def test_a_plain_starlette_app_needs_no_fastapi(tmp_path: Path) -> None:
    """Without FastAPI installed (imports of it fail), the lifespan and get_queue work in a
    Starlette app, and only QueueDep says what it needs."""
    script = f"""
import sys
sys.modules["fastapi"] = None  # as if FastAPI were not installed
import asyncio, httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from conveyor import Queue
from conveyor.fastapi import conveyor_lifespan, get_queue

queue = Queue.from_url({f"sqlite:///{tmp_path / 'plain.db'}"!r})

async def index(request):
    return PlainTextResponse((await get_queue(request).counts()).__class__.__name__)

app = Starlette(routes=[Route("/", index)], lifespan=conveyor_lifespan(queue))

async def main():
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            print((await client.get("/")).text)

asyncio.run(main())
try:
    from conveyor.fastapi import QueueDep
except ImportError as exc:
    print("QueueDep:", exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "dict"
    assert lines[1].startswith("QueueDep: conveyor.fastapi.QueueDep needs FastAPI")


def test_starlette_routes_get_the_queue_from_the_request(tmp_path: Path) -> None:
    queue = ClosingQueue(f"sqlite:///{tmp_path / 'q.db'}")

    async def enqueue(request: Request) -> JSONResponse:
        body = SendInvite.model_validate(await request.json())
        handle = await get_queue(request).enqueue(send_invite, body)
        return JSONResponse({"job_id": handle.id})

    app = Starlette(
        routes=[Route("/invitations", enqueue, methods=["POST"])],
        lifespan=conveyor_lifespan(queue),
    )
    with Uvicorn(app) as server:
        answer = httpx.post(f"{server.url}/invitations", json={"to_email": "a@example.com"})
        job_id = answer.json()["job_id"]

    async def state() -> JobState | None:
        async with Queue.from_url(queue.url) as reader:
            info = await reader.get(job_id)
            return None if info is None else info.state

    assert asyncio.run(state()) is JobState.QUEUED
    assert queue.closes == 1


def test_the_mounted_dashboard_asks_for_credentials_when_given(tmp_path: Path) -> None:
    queue = Queue.from_url(f"sqlite:///{tmp_path / 'q.db'}")
    app = FastAPI(lifespan=conveyor_lifespan(queue))
    app.mount("/jobs", conveyor_dashboard(queue, auth=DashboardAuth(token="s3cret-token")))
    with Uvicorn(app) as server:
        assert httpx.get(f"{server.url}/jobs/").status_code == 401
        bearer = {"Authorization": "Bearer s3cret-token"}
        assert httpx.get(f"{server.url}/jobs/", headers=bearer).status_code == 200
