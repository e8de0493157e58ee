"""The pages and a retry on Redis and PostgreSQL (private servers of the test session)."""

from __future__ import annotations

import re

import pytest

from conveyor import Queue
from conveyor.drivers.records import JobState
from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url
from tests.dashboard.conftest import Login, ServeFn, enqueue_notes, login, make_failed, run


@pytest.fixture(params=["redis", "postgres"])
def server_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return redis_test_url(request.getfixturevalue("redis_base_url"))
    url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
    request.addfinalizer(lambda: drop_test_schema(url))
    return url


def test_pages_and_a_retry(serve: ServeFn, server_url: str) -> None:
    failed = run(make_failed(server_url, 3))
    waiting = run(enqueue_notes(server_url, [f"w{i}" for i in range(4)]))
    dash = serve(server_url, page_size=2)
    overview = dash.client.get("/").text
    row = re.search(r'data-queue="emails".*?</tr>', overview, re.S)
    assert row is not None
    assert 'data-state="failed">3<' in row[0] and 'data-state="queued">4<' in row[0]
    first = dash.client.get("/queues/emails").text
    ids = re.findall(r'data-job-id="([^"]+)"', first)
    assert ids == list(reversed(waiting))[:2]
    older = re.search(r'href="([^"]+)" data-testid="next-page"', first)
    assert older is not None
    second = dash.client.get(older[1].replace("&amp;", "&")).text
    assert re.findall(r'data-job-id="([^"]+)"', second) == list(reversed(waiting))[2:]
    page = dash.client.get(f"/jobs/{failed[0]}").text
    assert "&lt;b&gt;exploded&lt;/b&gt;" in page and 'data-testid="retry-button"' in page
    done = dash.act("retry", {"job_id": failed[0]})
    assert "is queued again" in done.text

    async def state() -> JobState | None:
        async with Queue.from_url(server_url) as queue:
            info = await queue.get(failed[0])
            return None if info is None else info.state

    assert run(state()) is JobState.QUEUED
    assert "is paused" in dash.act("pause", {"queue": "emails"}).text
    assert "is deleted" in dash.act("delete", {"job_id": failed[1]}).text
    assert "was not changed: it is queued" in dash.act("delete", {"job_id": waiting[0]}).text
    assert "retried 1 failed jobs" in dash.act("retry-failed", {"queue": "emails"}).text
    # A secret field is shown redacted.

    async def secret() -> str:
        async with Queue.from_url(server_url) as queue:
            return (await queue.enqueue(login, Login(user="ada", password="hunter2-pw"))).id

    page = dash.client.get(f"/jobs/{run(secret())}").text
    assert "hunter2-pw" not in page and "**********" in page
