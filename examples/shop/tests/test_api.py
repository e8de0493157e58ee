"""The API's endpoints, in process (httpx over ASGI), on a real SQLite database that holds the
shop's tables and the queue: an endpoint's row and its jobs are committed together, or neither
is. (The in-memory ``conveyor_queue`` cannot write into a database's transaction, so endpoints
that enqueue with ``connection=`` are tested on a real SQLite queue.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from conveyor import JobState, Queue
from examples.shop import jobs
from examples.shop.api.app import create_app
from examples.shop.settings import Settings


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shop.db'}"


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(replace(Settings.from_env(), database_url=database_url))
    async with app.router.lifespan_context(app):  # httpx's ASGI transport runs no lifespan
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


@pytest.fixture
async def queue(api: httpx.AsyncClient, database_url: str) -> AsyncIterator[Queue]:
    async with Queue.from_url(database_url) as opened:
        yield opened


async def jobs_named(queue: Queue, name: str) -> list[str]:
    return [info.id for info in await queue.list_jobs(name=name, limit=100)]


async def test_an_invitation_and_its_jobs_are_committed_together(
    api: httpx.AsyncClient, queue: Queue
) -> None:
    response = await api.post("/invitations", json={"email": "ada@example.com", "inviter": "g"})
    assert response.status_code == 201, response.text
    info = await queue.get(response.json()["job_id"])
    assert info is not None and info.state is JobState.QUEUED
    assert info.payload == {"invitation_id": response.json()["id"]}
    assert len(await jobs_named(queue, jobs.write_audit.name)) == 1


async def test_a_request_that_fails_after_enqueuing_leaves_no_job(
    api: httpx.AsyncClient, queue: Queue
) -> None:
    body = {"email": "ada@example.com", "inviter": "grace"}
    first = await api.post("/invitations", json=body)
    assert first.status_code == 201
    again = await api.post("/invitations", json=body)
    assert again.status_code == 409 and "already invited" in again.text
    # The second request enqueued an email and an audit write before its commit failed.
    assert await jobs_named(queue, jobs.send_invite.name) == [first.json()["job_id"]]
    assert len(await jobs_named(queue, jobs.write_audit.name)) == 1


async def test_each_password_reset_is_a_new_job(api: httpx.AsyncClient, queue: Queue) -> None:
    assert (await api.post("/users", json={"email": "ada@example.com"})).status_code == 201
    ids: set[str] = set()
    for _ in range(2):
        response = await api.post("/password-resets", json={"email": "ada@example.com"})
        assert response.status_code == 202
        ids.add(response.json()["job_id"])
    assert set(await jobs_named(queue, jobs.send_password_reset.name)) == ids and len(ids) == 2
    unknown = await api.post("/password-resets", json={"email": "bob@example.com"})
    assert unknown.status_code == 404


async def test_an_order_enqueues_its_email_its_webhooks_and_its_audit_write(
    api: httpx.AsyncClient, queue: Queue
) -> None:
    for name in ("a", "b"):
        url = f"http://127.0.0.1:9/hooks/{name}"
        assert (await api.post("/webhook-endpoints", json={"url": url})).status_code == 201
    response = await api.post("/orders", json={"email": "ada@example.com", "total_cents": 500})
    assert response.status_code == 201
    order = response.json()
    confirmation, *webhooks, audit = order["job_ids"]
    assert confirmation == f"order-confirmation:{order['id']}"
    assert sorted(webhooks) == sorted(await jobs_named(queue, jobs.deliver_webhook.name))
    assert len(webhooks) == 2
    info = await queue.get(audit)
    assert info is not None and info.name == jobs.write_audit.name
