"""The framework integrations and the test helpers, as an application uses them: the FastAPI
lifespan (alone and around the app's own, stateless or with state), the ``QueueDep``
dependency, Starlette's ``get_queue``, the Flask extension, and handlers called with a test
context.

Locals prefixed with ``_`` exist only to pin a type (pyright does not report them as unused).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from flask import Flask
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request

from conveyor import FakeClock, JobContext, JobHandle, JobInfo, Queue, SyncQueue, Worker, job
from conveyor.fastapi import QueueDep, conveyor_lifespan, get_queue
from conveyor.flask import Conveyor, current_queue
from conveyor.testing import IdleReport, assert_enqueued, make_context, run_until_idle


class SendInvite(BaseModel):
    to_email: str


send_invite = job("email.send_invite", SendInvite, result=str)
queue = Queue.from_url("memory://typing")
app = FastAPI(lifespan=conveyor_lifespan(queue))


@asynccontextmanager
async def own(app: FastAPI) -> AsyncGenerator[None]:
    yield


@asynccontextmanager
async def with_state(app: Starlette) -> AsyncGenerator[Mapping[str, Any]]:
    yield {"ready": True}


wrapped = FastAPI(lifespan=conveyor_lifespan(queue, own))
stateful = Starlette(lifespan=conveyor_lifespan(queue, with_state))


@app.post("/invitations")
async def invite(body: SendInvite, queue: QueueDep) -> dict[str, str]:
    handle = await queue.enqueue(send_invite, body)
    _handle: JobHandle[str] = handle
    return {"job_id": handle.id}


async def starlette_endpoint(request: Request) -> str:
    return get_queue(request).url


conveyor = Conveyor(Flask(__name__), url="memory://typing")


def flask_view() -> str:
    _portal: SyncQueue = current_queue()
    return conveyor.queue.enqueue(send_invite, SendInvite(to_email="a@b.c")).id


async def handle_send_invite(payload: SendInvite, ctx: JobContext) -> str:
    return payload.to_email


async def unit_test(conveyor_queue: Queue, conveyor_clock: FakeClock, worker: Worker) -> None:
    assert await handle_send_invite(SendInvite(to_email="a@b.c"), make_context(send_invite)) == (
        "a@b.c"
    )
    await conveyor_queue.enqueue(send_invite, SendInvite(to_email="a@b.c"))
    _infos: list[JobInfo] = assert_enqueued(conveyor_queue, send_invite, SendInvite(to_email="a"))
    _by_fields: list[JobInfo] = assert_enqueued(conveyor_queue, send_invite, {"to_email": "a"})
    conveyor_clock.advance(60)
    report: IdleReport = await run_until_idle(conveyor_queue, worker, max_jobs=10)
    _ids: list[str] = report.ids
