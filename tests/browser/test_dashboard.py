"""The dashboard in a real browser: a job failed by a real worker process is found from the
overview, retried with a click and seen to complete by the page's own polling; hostile payloads
stay text; secrets stay hidden; a read-only login cannot act; a queue is paused and resumed.

Every wait is a bounded wait on what the page shows (``expect(...)`` with a timeout)."""

from __future__ import annotations

import json

from playwright.sync_api import Locator, Page, expect
from pydantic import SecretStr

from conveyor.dashboard import DashboardAuth
from tests.browser.app import Flaky, Login, Note, flaky, login, note
from tests.browser.conftest import WORKER, BrowseFn, QueueFn, off_the_loop
from tests.dashboard.conftest import ServeFn, make_failed
from tests.process.harness import Harness

# A page polls every 2 s and the overview's counts are read every 0.5 s; a worker process
# starts in a second or two. These bounds leave room for a loaded machine.
SHOWN_MS = 20_000
WORKER_SECONDS = 40.0

HOSTILE = (
    "bounce <script>window.__pwned = 'script'</script>"
    "<img src=x onerror=\"window.__pwned = 'img'\">"
)


def queue_row(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid="queue-row"][data-queue="{name}"]')


def test_a_failed_job_is_retried_from_the_browser_and_completes(
    harness: Harness, serve: ServeFn, browse: BrowseFn
) -> None:
    marker = harness.root / "card-ok"
    job_id = harness.queue.enqueue(flaky, Flaky(marker=str(marker))).id
    harness.start_worker(target=WORKER)
    harness.wait_state(job_id, "failed", timeout=WORKER_SECONDS)
    b = browse(serve(harness.url).base)

    # The overview: the billing queue has one failed job.
    page = b.open("/")
    row = queue_row(page, "billing")
    expect(row.locator('td[data-state="failed"]')).to_have_text("1", timeout=SHOWN_MS)
    expect(row.get_by_test_id("queue-status")).to_have_text("running")
    b.screenshot("overview")

    # Its queue page lists the job with its error.
    row.get_by_test_id("queue-link").click()
    expect(page.get_by_test_id("queue-name")).to_have_text("billing")
    job_row = page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')
    expect(job_row.get_by_test_id("job-state")).to_have_text("failed")
    expect(job_row).to_contain_text("card declined")
    b.screenshot("queue")

    # The job's page shows the traceback.
    job_row.get_by_test_id("job-link").click()
    expect(page.get_by_test_id("job-id")).to_have_text(job_id)
    expect(page.get_by_test_id("job-state")).to_have_text("failed")
    error = page.get_by_test_id("job-error")
    expect(error).to_contain_text("Traceback")
    expect(error).to_contain_text(f"RuntimeError: card declined: marker {marker} is missing")
    b.screenshot("failed-job")

    # Retry it once it can succeed: the confirm is accepted, the page's own CSRF token is sent,
    # and the state badge turns completed by polling, without a reload.
    marker.touch()
    page.wait_for_load_state("load")  # htmx has bound the buttons
    loaded = b.document_id()
    token = page.locator('#job-actions input[name="csrf"]').first.get_attribute("value")
    assert token
    with page.expect_response(lambda r: r.url.endswith("/actions/retry")) as answer:
        page.get_by_test_id("retry-button").click()
    assert answer.value.status == 200
    assert f"csrf={token}" in (answer.value.request.post_data or "")
    expect(page.get_by_test_id("notice")).to_have_text(f"job {job_id} is queued again")
    assert b.dialogs == [f"Retry job {job_id}?"]
    expect(page.get_by_test_id("job-state")).to_have_text("completed", timeout=SHOWN_MS)
    assert b.document_id() == loaded, "the page was reloaded instead of updated in place"
    assert harness.job(job_id).state.value == "completed"
    expect(page.get_by_test_id("job-attempt")).to_have_text("2/2")
    expect(page.get_by_test_id("retry-button")).to_have_count(0)

    # The worker that did it is listed.
    page.get_by_test_id("nav-workers").click()
    expect(page.get_by_test_id("worker-row")).to_have_count(1)
    expect(page.get_by_test_id("worker-row")).to_contain_text("billing")
    b.screenshot("workers")
    b.assert_clean()


def test_hostile_payloads_and_errors_are_text_and_secrets_are_hidden(
    harness: Harness, serve: ServeFn, browse: BrowseFn
) -> None:
    hostile = harness.queue.enqueue(note, Note(text=HOSTILE)).id
    secret_login = Login(user="ann", password=SecretStr("hunter2-s3cret"))
    secret = harness.queue.enqueue(login, secret_login).id
    harness.start_worker(target=WORKER)
    harness.wait_state(hostile, "failed", timeout=WORKER_SECONDS)
    harness.wait_state(secret, "completed", timeout=WORKER_SECONDS)
    b = browse(serve(harness.url).base)

    # The list shows the error's first line (which holds the markup) as text.
    page = b.open("/queues/emails?state=failed")
    job_row = page.locator(f'[data-testid="job-row"][data-job-id="{hostile}"]')
    expect(job_row).to_contain_text("mail server refused 'bounce <script>window.__pwned")
    expect(job_row).to_contain_text("</script><img src=x onerror=")
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"

    page = b.open(f"/jobs/{hostile}")
    payload = page.get_by_test_id("job-payload")
    expect(payload).to_contain_text("<script>window.__pwned = 'script'</script>")
    assert json.loads(payload.inner_text()) == {"text": HOSTILE}
    expect(page.get_by_test_id("job-error")).to_contain_text("<img src=x onerror=")
    # Shown as text, so nothing of it became an element, and nothing ran.
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"

    page = b.open(f"/jobs/{secret}")
    expect(page.get_by_test_id("job-state")).to_have_text("completed")
    shown = json.loads(page.get_by_test_id("job-payload").inner_text())
    assert shown == {"user": "ann", "password": "**********"}
    assert "hunter2" not in page.content()
    b.assert_clean()


def test_a_read_only_login_sees_no_actions_and_its_posts_are_refused(
    sqlite_url: str, serve: ServeFn, browse: BrowseFn, queue_of: QueueFn
) -> None:
    (job_id,) = off_the_loop(make_failed(sqlite_url, 1))
    dash = serve(sqlite_url, auth=DashboardAuth(token="full-token-1", read_token="read-token-1"))

    reader = browse(dash.base)
    page = reader.open("/?token=read-token-1")
    expect(page).to_have_url(f"{dash.base}/")  # the token leaves the address at once
    expect(page.get_by_test_id("who")).to_have_text("read-token (read-only)")
    expect(queue_row(page, "emails").locator('td[data-state="failed"]')).to_have_text(
        "1", timeout=SHOWN_MS
    )
    for path in ("/", "/queues/emails", f"/jobs/{job_id}"):
        page = reader.open(path)
        expect(page.locator("main")).to_be_visible()
        # No form that changes anything (the search form is a GET).
        expect(page.locator("form[method=post], [hx-post]")).to_have_count(0)
    expect(page.get_by_test_id("job-state")).to_have_text("failed")

    # Even with this session's CSRF token, taken from the page, a POST is refused.
    headers = json.loads(page.locator("body").get_attribute("hx-headers") or "{}")
    token = headers["X-CSRF-Token"]
    refused = page.request.post(
        f"{dash.base}/actions/retry",
        form={"job_id": job_id, "csrf": token},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert refused.status == 403, refused.text()
    assert queue_of(sqlite_url).get(job_id).state.value == "failed"
    reader.assert_clean()

    # The full login, on the same server, has the buttons.
    admin = browse(dash.base)
    page = admin.open(f"/jobs/{job_id}?token=full-token-1")
    expect(page.get_by_test_id("who")).to_have_text("token")
    expect(page.get_by_test_id("retry-button")).to_be_visible()
    admin.assert_clean()


def test_a_queue_is_paused_and_resumed_from_the_overview(
    sqlite_url: str, serve: ServeFn, browse: BrowseFn, queue_of: QueueFn
) -> None:
    queue = queue_of(sqlite_url)
    queue.enqueue(note, Note(text="waiting"))
    b = browse(serve(sqlite_url).base)
    page = b.open("/")
    row = queue_row(page, "emails")
    expect(row.get_by_test_id("queue-status")).to_have_text("running", timeout=SHOWN_MS)

    for action, shown, other in (("pause", "paused", "resume"), ("resume", "running", "pause")):
        row.get_by_test_id("queue-link").click()
        expect(page.get_by_test_id("queue-name")).to_have_text("emails")
        # htmx binds the buttons when the page has loaded; a click before that submits the
        # form without it, which shows the no-script confirmation page instead.
        page.wait_for_load_state("load")
        page.get_by_test_id(f"{action}-button").click()
        expect(page.get_by_test_id("notice")).to_have_text(f"queue emails is {shown}")
        # The queue page swaps in the new status and the opposite button at once.
        expect(page.get_by_test_id("queue-status")).to_have_text(shown)
        expect(page.get_by_test_id(f"{other}-button")).to_be_visible()
        expect(page.get_by_test_id(f"{action}-button")).to_have_count(0)
        assert b.dialogs[-1].startswith(f"{action.capitalize()} queue emails?")
        assert {q.name: q.paused for q in queue.queues()}["emails"] is (action == "pause")
        page.get_by_test_id("nav-overview").click()
        expect(row.get_by_test_id("queue-status")).to_have_text(shown, timeout=SHOWN_MS)
    assert len(b.dialogs) == 2
    b.assert_clean()


def test_the_watch_sees_a_script_the_policy_blocks(
    sqlite_url: str, serve: ServeFn, browse: BrowseFn
) -> None:
    """What the other tests' ``assert_clean`` relies on: an inline script put into one of our
    pages is blocked by the dashboard's CSP, and the block is reported."""
    b = browse(serve(sqlite_url).base)
    page = b.open("/")
    blocked = "Content Security Policy"
    with page.expect_console_message(lambda m: blocked in m.text, timeout=SHOWN_MS):
        page.evaluate(
            """() => {
            const s = document.createElement("script");
            s.textContent = "window.__pwned = 'inline'";
            document.body.appendChild(s);
        }"""
        )
    assert page.evaluate("typeof window.__pwned") == "undefined"
    # The violation event comes back through a binding: wait (bounded) until it has.
    b.wait_until(lambda: any(p.startswith("CSP violation") for p in b.problems), "the report")
    assert any(blocked in p for p in b.problems), b.problems
