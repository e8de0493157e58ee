"""The README's picture of the dashboard, taken of a small realistic data set: three queues with
completed, failed and scheduled jobs, a live worker process, and an hour of throughput.

Every run saves it as ``test-artifacts/dashboard/showcase.png``; with
``CONVEYOR_UPDATE_SCREENSHOT=1`` it also rewrites ``docs/dashboard.png``:

    CONVEYOR_UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/browser/test_screenshot.py
"""

from __future__ import annotations

import os
import shutil
import time

from playwright.sync_api import expect
from pydantic import SecretStr

from conveyor.drivers.records import QueueStats
from tests.browser.app import (
    Flaky,
    Login,
    Note,
    Report,
    flaky,
    login,
    note,
    report,
)
from tests.browser.conftest import VIEWPORT, WORKER, BrowseFn
from tests.dashboard.conftest import ServeFn
from tests.process.harness import REPO, Harness

UPDATE_ENV = "CONVEYOR_UPDATE_SCREENSHOT"
DOCS_PICTURE = REPO / "docs" / "dashboard.png"
SHOWN_MS = 20_000
WORKER_SECONDS = 40.0


def history(now: float) -> list[QueueStats]:
    """The hour before this one, per queue and minute, as a worker would have counted it: a
    steady mail load with a burst, nightly-style reports, and a few declined charges."""
    this_minute = int(now // 60)
    samples: list[QueueStats] = []
    for ago in range(1, 60):
        minute = this_minute - ago
        wave = (ago * 7) % 11  # a fixed, uneven pattern: the picture is the same every run
        samples.append(
            QueueStats("emails", minute, completed=18 + wave + (25 if 20 <= ago < 26 else 0))
        )
        samples.append(
            QueueStats("billing", minute, completed=6 + wave // 2, failed=3 if ago % 9 == 0 else 0)
        )
        if ago % 10 == 0:
            samples.append(QueueStats("reports", minute, completed=12))
    return samples


def test_the_dashboard_picture(harness: Harness, serve: ServeFn, browse: BrowseFn) -> None:
    paid = harness.root / "card-ok"
    paid.touch()
    declined = str(harness.root / "card-declined")  # never created: that charge fails
    queue = harness.queue
    finished = [
        *(queue.enqueue(note, Note(text=f"welcome #{i}")).id for i in range(9)),
        queue.enqueue(note, Note(text="bounce: no such mailbox")).id,
        queue.enqueue(login, Login(user="ann", password=SecretStr("hunter2"))).id,
        *(queue.enqueue(flaky, Flaky(marker=str(paid))).id for _ in range(5)),
        queue.enqueue(flaky, Flaky(marker=declined)).id,
        *(queue.enqueue(report, Report(month=m)).id for m in ("2026-09", "2026-10")),
    ]
    for month in ("2026-11", "2026-12"):
        queue.enqueue(report, Report(month=month), delay=3600)
    # Enqueueing opened the queue's driver; the counters go in through it.
    queue.call(queue.queue.driver.stats_add(history(time.time())))
    harness.start_worker(target=WORKER)
    for job_id in finished:
        harness.wait_state(job_id, "completed", "failed", timeout=WORKER_SECONDS)

    b = browse(serve(harness.url).base)
    page = b.open("/")
    for name, state, count in (("emails", "failed", "1"), ("billing", "failed", "1")):
        row = page.locator(f'[data-testid="queue-row"][data-queue="{name}"]')
        expect(row.locator(f'td[data-state="{state}"]')).to_have_text(count, timeout=SHOWN_MS)
    reports = page.locator('[data-testid="queue-row"][data-queue="reports"]')
    expect(reports.locator('td[data-state="scheduled"]')).to_have_text("2")
    expect(reports.get_by_test_id("queue-workers")).to_have_text("1")
    expect(page.get_by_test_id("throughput-chart")).to_have_count(3)
    b.assert_clean()

    # As tall as the page, no blank screen below it.
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 400})
    shot = b.screenshot("showcase")
    if os.environ.get(UPDATE_ENV) == "1":
        DOCS_PICTURE.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_PICTURE)
