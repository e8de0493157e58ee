"""The dashboard's actions over HTTP: each one really changes the queue, is refused without
its CSRF token or by a read-only login, asks for confirmation without htmx, and is logged."""

from __future__ import annotations

import asyncio
import logging
import re
import threading

import httpx
import pytest

from conveyor import JobContext, Queue, Worker
from conveyor.dashboard import DashboardAuth
from conveyor.drivers.records import JobState
from tests.conformance.worker.helpers import fast_config
from tests.dashboard.conftest import (
    Note,
    ServeFn,
    enqueue_notes,
    make_failed,
    note,
    run,
    wait_for,
)


async def state_of(url: str, job_id: str) -> JobState | None:
    async with Queue.from_url(url) as queue:
        info = await queue.get(job_id)
        return None if info is None else info.state


async def paused(url: str, name: str) -> bool:
    async with Queue.from_url(url) as queue:
        return next(q.paused for q in await queue.queues() if q.name == name)


def test_retry_moves_a_failed_job_back_to_queued(
    serve: ServeFn, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    (job_id,) = run(make_failed(sqlite_url, 1))
    dash = serve(sqlite_url)
    page = dash.client.get(f"/jobs/{job_id}").text
    assert 'data-testid="retry-button"' in page and 'hx-confirm="Retry job' in page
    with caplog.at_level(logging.INFO, logger="conveyor.dashboard"):
        done = dash.act("retry", {"job_id": job_id})
    assert done.status_code == 200
    assert "is queued again" in done.text and 'data-testid="notice"' in done.text
    assert run(state_of(sqlite_url, job_id)) is JobState.QUEUED
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "dashboard_action"]
    assert line.name == "conveyor.dashboard"
    assert (getattr(line, "action", None), getattr(line, "user", None)) == ("retry", "local")
    assert getattr(line, "job_id", None) == job_id and getattr(line, "client", None)
    # The job page shows it queued, with a cancel button instead of retry.
    live = dash.client.get(f"/jobs/{job_id}?partial=1").text
    assert 'data-testid="job-state">queued<' in live and 'data-testid="cancel-button"' in live
    again = dash.act("retry", {"job_id": job_id})
    assert "was not changed: it is queued" in again.text


def test_cancel_cancels_a_waiting_job(serve: ServeFn, sqlite_url: str) -> None:
    (job_id,) = run(enqueue_notes(sqlite_url, ["wait"]))
    dash = serve(sqlite_url)
    done = dash.act("cancel", {"job_id": job_id})
    assert done.status_code == 200 and "is cancelled" in done.text
    assert run(state_of(sqlite_url, job_id)) is JobState.CANCELLED
    missing = dash.act("cancel", {"job_id": "no-such-job"})
    assert "does not exist" in missing.text


def test_delete_deletes_a_finished_job(serve: ServeFn, sqlite_url: str) -> None:
    (job_id,) = run(make_failed(sqlite_url, 1))
    dash = serve(sqlite_url)
    assert 'data-testid="delete-button"' in dash.client.get(f"/jobs/{job_id}").text
    done = dash.act("delete", {"job_id": job_id})
    assert "is deleted" in done.text
    assert run(state_of(sqlite_url, job_id)) is None


def test_delete_on_memory_deletes_and_refuses_a_waiting_job(serve: ServeFn) -> None:
    """On the memory backend too (the server runs in this process, so it shares the store)."""
    url = "memory://dashboard-delete"

    async def seed() -> tuple[str, list[str]]:
        queue = Queue.from_url(url)
        await queue.connect()
        failed = await make_failed(url, 1)  # its burst worker would run a waiting job too
        (waiting,) = await enqueue_on(queue)
        return waiting, failed

    async def enqueue_on(queue: Queue) -> list[str]:
        from tests.dashboard.conftest import Note, note

        return [h.id for h in await queue.enqueue_many([note.request(Note(text="w"))])]

    waiting, [failed] = run(seed())
    dash = serve(url)
    assert "is deleted" in dash.act("delete", {"job_id": failed}).text
    refused = dash.act("delete", {"job_id": waiting})
    assert "was not changed: it is queued" in refused.text
    assert 'data-testid="job-state">queued<' in dash.client.get(f"/jobs/{waiting}").text


def test_retry_all_failed_is_capped_per_click(serve: ServeFn, sqlite_url: str) -> None:
    failed = run(make_failed(sqlite_url, 7))
    dash = serve(sqlite_url, retry_cap=5)
    page = dash.client.get("/queues/emails").text
    assert "max 5 per click" in page
    first = dash.act("retry-failed", {"queue": "emails", "name": "dash.boom"})
    assert "retried 5 failed jobs named dash.boom of queue emails" in first.text
    assert "at most 5 per click" in first.text
    states = [run(state_of(sqlite_url, i)) for i in failed]
    assert states.count(JobState.QUEUED) == 5 and states.count(JobState.FAILED) == 2
    second = dash.act("retry-failed", {"queue": "emails"})
    assert "retried 2 failed jobs of queue emails" in second.text
    assert "per click" not in second.text
    none_left = dash.act("retry-failed", {"queue": "emails", "name": "other.name"})
    assert "retried 0" in none_left.text
    bad = dash.act("retry-failed", {"queue": "no spaces allowed"})
    assert bad.status_code == 400 and "invalid queue name" in bad.text


def test_pause_and_resume_really_pause_the_queue(serve: ServeFn, sqlite_url: str) -> None:
    run(enqueue_notes(sqlite_url, ["x"]))
    dash = serve(sqlite_url)
    assert 'data-testid="pause-button"' in dash.client.get("/queues/emails").text
    done = dash.act("pause", {"queue": "emails"})
    assert "queue emails is paused" in done.text
    assert run(paused(sqlite_url, "emails"))
    # The answer carries the new status and button for htmx to swap in by id.
    assert '<span id="queue-status-badge" hx-swap-oob="true">' in done.text
    assert '<div class="inline" id="pause-resume" hx-swap-oob="true">' in done.text
    assert 'data-testid="resume-button"' in done.text
    wait_for(
        lambda: 'data-testid="resume-button"' in dash.client.get("/queues/emails").text,
        "the resume button",
    )
    assert 'data-testid="queue-status">paused<' in dash.client.get("/?partial=1").text
    assert "is running" in dash.act("resume", {"queue": "emails"}).text
    assert not run(paused(sqlite_url, "emails"))


def test_a_post_without_the_csrf_token_is_refused(serve: ServeFn, sqlite_url: str) -> None:
    (job_id,) = run(make_failed(sqlite_url, 1))
    dash = serve(sqlite_url)
    dash.client.get("/")  # a session cookie
    for data in ({"job_id": job_id}, {"job_id": job_id, "csrf": "0" * 64}):
        refused = dash.client.post("/actions/retry", data=data, headers={"HX-Request": "true"})
        assert refused.status_code == 403 and "CSRF" in refused.text
    # The token of another session of the same dashboard is no good either.
    with httpx.Client(base_url=dash.base) as other:
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', other.get("/queues/emails").text)
        assert found is not None
        stolen = found[1]
    refused = dash.client.post("/actions/retry", data={"job_id": job_id, "csrf": stolen})
    assert refused.status_code == 403
    assert run(state_of(sqlite_url, job_id)) is JobState.FAILED
    # The header htmx sends works as the form field does.
    token = dash.csrf()
    done = dash.client.post(
        "/actions/retry",
        data={"job_id": job_id},
        headers={"HX-Request": "true", "X-CSRF-Token": token},
    )
    assert done.status_code == 200 and run(state_of(sqlite_url, job_id)) is JobState.QUEUED


def test_a_read_only_login_may_not_act(serve: ServeFn, sqlite_url: str) -> None:
    (job_id,) = run(make_failed(sqlite_url, 1))
    auth = DashboardAuth(token="full-token-123", read_token="read-token-123")
    dash = serve(sqlite_url, auth=auth)
    dash.client.headers["authorization"] = "Bearer read-token-123"
    page = dash.client.get(f"/jobs/{job_id}").text
    assert "(read-only)" in page and 'data-testid="retry-button"' not in page
    token = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page)
    assert token is not None
    for action, data in (("retry", {"job_id": job_id}), ("pause", {"queue": "emails"})):
        refused = dash.client.post(
            f"/actions/{action}", data={**data, "csrf": token[1]}, headers={"HX-Request": "true"}
        )
        assert refused.status_code == 403
    assert run(state_of(sqlite_url, job_id)) is JobState.FAILED
    assert not run(paused(sqlite_url, "emails"))
    dash.client.headers["authorization"] = "Bearer full-token-123"
    assert dash.act("retry", {"job_id": job_id}).status_code == 200
    assert run(state_of(sqlite_url, job_id)) is JobState.QUEUED


def test_a_plain_form_post_asks_for_confirmation_first(serve: ServeFn, sqlite_url: str) -> None:
    """Without htmx (no JavaScript) the browser posts the form itself: a confirmation page
    comes first, and only its own form acts."""
    (job_id,) = run(make_failed(sqlite_url, 1))
    dash = serve(sqlite_url)
    ask = dash.act("retry", {"job_id": job_id}, htmx=False)
    assert ask.status_code == 200 and 'data-testid="confirm-form"' in ask.text
    assert f"Retry job {job_id}?" in ask.text
    assert run(state_of(sqlite_url, job_id)) is JobState.FAILED
    done = dash.act("retry", {"job_id": job_id, "confirmed": "yes"}, htmx=False)
    assert "is queued again" in done.text and 'data-testid="back-link"' in done.text
    assert run(state_of(sqlite_url, job_id)) is JobState.QUEUED


def test_only_post_changes_anything(serve: ServeFn, sqlite_url: str) -> None:
    (job_id,) = run(make_failed(sqlite_url, 1))
    dash = serve(sqlite_url)
    assert dash.client.get(f"/actions/retry?job_id={job_id}").status_code == 405
    assert run(state_of(sqlite_url, job_id)) is JobState.FAILED


def test_a_running_job_shows_its_progress_and_is_told_to_stop(
    serve: ServeFn, sqlite_url: str
) -> None:
    """A real worker runs a job that reports progress and waits: the job page shows the
    progress live, and cancel asks its worker to stop it."""
    (job_id,) = run(enqueue_notes(sqlite_url, ["long"]))
    box: dict[str, object] = {}
    started = threading.Event()

    def work() -> None:
        async def main() -> None:
            async with Queue.from_url(sqlite_url) as queue:
                worker = Worker(queue, jobs=[note], queues=["emails"], config=fast_config())

                @worker.handles(note)
                async def slow(payload: Note, ctx: JobContext) -> str:
                    ctx.progress(0.5, "halfway <there>")
                    await asyncio.Event().wait()  # until the cancel interrupts it
                    return "never"

                box["worker"], box["loop"] = worker, asyncio.get_running_loop()
                started.set()
                await worker.run()

        asyncio.run(main())

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert started.wait(10)
        dash = serve(sqlite_url)
        wait_for(
            lambda: 'data-testid="job-progress"' in dash.client.get(f"/jobs/{job_id}").text,
            "the progress on the job page",
        )
        live = dash.client.get(f"/jobs/{job_id}?partial=1").text
        assert 'data-testid="job-state">active<' in live
        assert '<progress max="1" value="0.5">' in live and "halfway &lt;there&gt;" in live
        done = dash.act("cancel", {"job_id": job_id})
        assert "its worker was told to stop it" in done.text
        wait_for(
            lambda: run(state_of(sqlite_url, job_id)) is JobState.CANCELLED, "the job cancelled"
        )
    finally:
        loop, worker = box.get("loop"), box.get("worker")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(worker, Worker):
            loop.call_soon_threadsafe(worker.stop)
        thread.join(30)
    assert not thread.is_alive()
