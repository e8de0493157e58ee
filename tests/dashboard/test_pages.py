"""Every page of the dashboard, served by uvicorn, read over HTTP."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from conveyor import Queue, Worker
from conveyor.dashboard import conveyor_dashboard
from conveyor.dashboard.app import CSP
from conveyor.drivers.records import QueueStats
from tests.conformance.worker.helpers import fast_config
from tests.dashboard.conftest import (
    Login,
    Note,
    ServeFn,
    Server,
    boom,
    enqueue_notes,
    login,
    make_failed,
    note,
    run,
    wait_for,
)


def job_ids_on(html: str) -> list[str]:
    return re.findall(r'data-testid="job-row" data-job-id="([^"]+)"', html)


def test_every_page_answers_with_the_security_headers(serve: ServeFn, sqlite_url: str) -> None:
    (job_id,) = run(enqueue_notes(sqlite_url, ["hello"]))
    dash = serve(sqlite_url)
    paths = ["/", "/?partial=1", "/queues/emails", "/queues/emails?partial=1", "/workers",
             "/schedules", f"/jobs/{job_id}", f"/jobs/{job_id}?partial=1", "/static/htmx.min.js",
             "/static/dashboard.css", "/jobs/nope", "/nowhere"]  # fmt: skip
    for path in paths:
        response = dash.client.get(path)
        assert response.status_code in (200, 404), path
        assert response.headers["content-security-policy"] == CSP, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        if response.headers["content-type"].startswith("text/html"):
            # No inline script or style: the CSP would block them.
            assert "<style" not in response.text and " style=" not in response.text
            for script in re.findall(r"<script[^>]*>", response.text):
                assert "src=" in script
    assert dash.client.get("/jobs/nope").status_code == 404
    htmx = dash.client.get("/static/htmx.min.js")
    assert htmx.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "htmx" in htmx.text[:200]


def test_the_overview_shows_counts_workers_and_status_from_its_cache(
    serve: ServeFn, sqlite_url: str
) -> None:
    run(enqueue_notes(sqlite_url, ["a", "b", "c"]))
    run(make_failed(sqlite_url, 2))
    dash = serve(sqlite_url)
    page = dash.client.get("/").text
    assert 'id="overview-table"' in page
    row = re.search(r'<tr data-testid="queue-row" data-queue="emails".*?</tr>', page, re.S)
    assert row is not None
    # The burst worker ran the three notes too: every job of the queue finished.
    assert 'data-state="completed">3<' in row[0] and 'data-state="failed">2<' in row[0]
    assert 'data-testid="queue-status">running<' in row[0]
    assert 'hx-trigger="every 2s"' in page
    fragment = dash.client.get("/?partial=1").text
    assert fragment.startswith('<div id="overview"') and "<html" not in fragment


def test_the_overview_warns_of_a_queue_nobody_serves(serve: ServeFn, sqlite_url: str) -> None:
    run(enqueue_notes(sqlite_url, ["waiting"]))
    dash = serve(sqlite_url)
    page = dash.client.get("/").text
    assert 'data-testid="unserved-warning"' in page
    workers = dash.client.get("/workers").text
    assert re.search(r'data-testid="unserved-warning" data-queue="emails"', workers)
    assert "No live workers." in workers


def test_the_queue_page_pages_through_jobs_newest_first(serve: ServeFn, sqlite_url: str) -> None:
    ids = run(enqueue_notes(sqlite_url, [f"n{i}" for i in range(12)]))
    dash = serve(sqlite_url, page_size=5)
    seen: list[str] = []
    path: str | None = "/queues/emails"
    pages = 0
    while path is not None:
        page = dash.client.get(path.replace("&amp;", "&")).text
        on_page = job_ids_on(page)
        assert len(on_page) <= 5
        seen += on_page
        pages += 1
        found = re.search(r'href="([^"]+)" data-testid="next-page"', page)
        path = found[1] if found else None
    assert pages == 3
    assert seen == list(reversed(ids))
    queued = dash.client.get("/queues/emails?state=queued").text
    assert len(job_ids_on(queued)) == 5
    assert job_ids_on(dash.client.get("/queues/emails?state=failed").text) == []


def test_the_queue_page_finds_a_job_by_id_or_by_name(serve: ServeFn, sqlite_url: str) -> None:
    ids = run(enqueue_notes(sqlite_url, ["x", "y"]))
    failed = run(make_failed(sqlite_url, 1))
    dash = serve(sqlite_url)
    assert job_ids_on(dash.client.get(f"/queues/emails?q={ids[0]}").text)[0] == ids[0]
    by_name = job_ids_on(dash.client.get("/queues/emails?q=dash.boom").text)
    assert by_name == failed
    nothing = dash.client.get("/queues/emails?q=no.such.job").text
    assert job_ids_on(nothing) == [] and 'data-testid="no-jobs"' in nothing


def test_the_job_page_shows_everything_escaped(serve: ServeFn, sqlite_url: str) -> None:
    (failed,) = run(make_failed(sqlite_url, 1, name="<script>alert(1)</script>"))
    dash = serve(sqlite_url)
    page = dash.client.get(f"/jobs/{failed}").text
    assert "<script>alert(1)</script>" not in page and "<b>exploded</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;exploded&lt;/b&gt;" in page
    assert 'data-testid="job-state">failed<' in page
    assert 'data-testid="retry-button"' in page
    assert "RuntimeError" in page  # the traceback of the attempt
    assert re.search(r'data-testid="attempt" data-attempt="1"', page)
    for step in ("Enqueued", "Runs at", "Started", "Finished"):
        assert step in page
    live = dash.client.get(f"/jobs/{failed}?partial=1").text
    assert live.startswith('<div id="job-live"') and "failed" in live


def test_a_large_payload_is_cut_with_a_note(serve: ServeFn, sqlite_url: str) -> None:
    (job_id,) = run(enqueue_notes(sqlite_url, ["x" * 200_000]))
    dash = serve(sqlite_url)
    page = dash.client.get(f"/jobs/{job_id}").text
    assert 'data-testid="truncated-note"' in page
    assert "Showing the first 64 KiB of" in page
    assert len(page) < 100_000


def test_a_secret_field_is_shown_redacted(serve: ServeFn, sqlite_url: str) -> None:
    async def enqueue() -> tuple[str, dict[str, str]]:
        async with Queue.from_url(sqlite_url) as queue:
            handle = await queue.enqueue(login, Login(user="ada", password="hunter2-secret"))
            info = await queue.get(handle.id)
            assert info is not None
            return handle.id, info.headers

    job_id, headers = run(enqueue())
    assert "conveyor-secrets" in headers
    dash = serve(sqlite_url)
    page = dash.client.get(f"/jobs/{job_id}").text
    assert "hunter2-secret" not in page
    assert "**********" in page and "ada" in page
    assert "conveyor-secrets" in page  # the headers table


def test_a_secret_field_is_shown_redacted_from_memory(serve: ServeFn) -> None:
    """The server runs in this process, so it sees the same in-process store."""
    url = "memory://dashboard-secrets"

    async def enqueue() -> str:
        queue = Queue.from_url(url)
        await queue.connect()  # not closed: closing may drop an in-process store
        handle = await queue.enqueue(login, Login(user="ada", password="hunter2-secret"))
        return handle.id

    job_id = run(enqueue())
    dash = serve(url)
    page = dash.client.get(f"/jobs/{job_id}").text
    assert 'data-testid="job-payload"' in page
    assert "hunter2-secret" not in page
    assert "**********" in page


def test_the_workers_and_schedules_pages_show_a_live_worker(
    serve: ServeFn, sqlite_url: str
) -> None:
    started = threading.Event()
    box: dict[str, object] = {}

    def work() -> None:
        async def main() -> None:
            queue = Queue.from_url(sqlite_url)
            worker = Worker(
                queue, jobs=[note, boom, login], config=fast_config(), queues=["emails"]
            )
            worker.register(note, lambda payload, ctx: payload.text)
            worker.register(boom, lambda payload, ctx: None)
            worker.register(login, lambda payload, ctx: None)
            worker.cron("0 3 * * *", note, Note(text="nightly"), name="nightly-note")
            box["worker"], box["loop"] = worker, asyncio.get_running_loop()
            started.set()
            async with queue:
                await worker.run()

        asyncio.run(main())

    run(enqueue_notes(sqlite_url, ["so that the queue exists"]))
    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert started.wait(10)
        dash = serve(sqlite_url)
        wait_for(
            lambda: 'data-testid="worker-row"' in dash.client.get("/workers").text,
            "the worker on the workers page",
        )
        page = dash.client.get("/workers").text
        assert "emails" in page and 'data-testid="unserved-warning"' not in page
        wait_for(
            lambda: 'data-schedule="nightly-note"' in dash.client.get("/schedules").text,
            "the schedule on the schedules page",
        )
        schedules = dash.client.get("/schedules").text
        assert "0 3 * * *" in schedules and "dash.note" in schedules
        wait_for(
            lambda: 'data-testid="queue-workers">1' in dash.client.get("/").text,
            "the overview counting the worker",
        )
    finally:
        loop = box.get("loop")
        worker = box.get("worker")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(worker, Worker):
            loop.call_soon_threadsafe(worker.stop)
        thread.join(30)
    assert not thread.is_alive()


def test_the_dashboard_mounts_under_a_prefix(sqlite_url: str) -> None:
    """Mounted in another Starlette app: links and the cookie's path carry the prefix."""
    (job_id,) = run(enqueue_notes(sqlite_url, ["mounted"]))
    outer = Starlette(routes=[Mount("/jobs", conveyor_dashboard(Queue.from_url(sqlite_url)))])
    server = Server(outer)
    try:
        with httpx.Client(base_url=server.url) as client:
            page = client.get("/jobs/")
            assert page.status_code == 200
            assert 'href="/jobs/queues/emails"' in page.text
            assert 'src="/jobs/static/htmx.min.js"' in page.text
            assert "Path=/jobs" in page.headers["set-cookie"]
            assert client.get("/jobs/static/htmx.min.js").status_code == 200
            job = client.get(f"/jobs/jobs/{job_id}")
            assert job.status_code == 200 and job_id in job.text
    finally:
        server.stop()


def test_the_failed_count_reaches_the_overview_soon(serve: ServeFn, sqlite_url: str) -> None:
    """The overview reads in the background: a change shows within a few refreshes."""
    dash = serve(sqlite_url)
    assert "No queues yet." in dash.client.get("/").text
    run(make_failed(sqlite_url, 1))
    wait_for(
        lambda: 'data-state="failed">1<' in dash.client.get("/?partial=1").text,
        "the failed job counted",
    )


def test_the_last_hour_of_throughput_from_the_memory_backend(serve: ServeFn) -> None:
    """Per-minute counters, written here as workers write them, shown as totals, a failure rate
    and a bar chart drawn by the server."""
    url = "memory://dashboard-stats"

    async def seed() -> None:
        queue = Queue.from_url(url)
        await queue.connect()
        await enqueue_notes(url, ["so that the queue exists"])
        minute = int(time.time() // 60)
        await queue.driver.stats_add(
            [
                QueueStats("emails", minute - 5, completed=6, retried=2, failed=1),
                QueueStats("emails", minute - 1, completed=3, failed=0),
                QueueStats("emails", minute - 90, completed=1000),  # older than an hour
            ]
        )

    run(seed())
    dash = serve(url)
    page = dash.client.get("/").text
    row = re.search(r'data-queue="emails".*?</tr>', page, re.S)
    assert row is not None
    assert 'data-testid="completed-hour">9<' in row[0]
    assert 'data-testid="failed-hour">1<' in row[0]
    assert 'data-testid="failure-rate">10.0%<' in row[0]
    assert row[0].count("<rect") == 120  # a completed and a failed bar per minute
    assert "6 completed, 1 failed" in row[0]  # the bar's tooltip
    assert "Last hour: 9 completed, 2 retried, 1 failed." in page
    queue_page = dash.client.get("/queues/emails").text
    assert 'data-testid="throughput-chart"' in queue_page and "failure rate 10.0%" in queue_page
