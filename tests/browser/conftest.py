"""Fixtures of the dashboard's browser tests: a headless system Chromium driven by Playwright,
a real ``conveyor worker`` process on a SQLite file, and the dashboard served by uvicorn.

The browser is Debian's ``chromium`` package, never one Playwright downloads. Without it the
tests are skipped with a reason that says what to install, unless ``CONVEYOR_REQUIRE_BROWSER=1``
(set by ``.ci/run``) makes a missing browser a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from conveyor import SyncQueue

# The dashboard on a real uvicorn, and a SQLite queue URL of the test's own.
from tests.dashboard.conftest import serve as serve
from tests.dashboard.conftest import sqlite_url as sqlite_url
from tests.process.harness import REPO, Harness

T = TypeVar("T")

REQUIRE_ENV = "CONVEYOR_REQUIRE_BROWSER"
WORKER = "tests.browser.app:worker"
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
# Generous: the whole suite runs under xdist on small machines, and a page poll is 2 s.
ACTION_TIMEOUT_MS = 20_000
# Playwright adds --headless and a fresh temporary profile (user-data-dir) to every launch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1536, "height": 900}

# Runs before any script of every page, outside the page's CSP: reports each Content-Security-
# Policy violation to the test, and marks the document so a test can tell it was not reloaded.
_WATCH_SCRIPT = """
window.__document_id = `${Date.now()}-${Math.random()}`;
document.addEventListener("securitypolicyviolation", (e) => {
    window.__report_csp(JSON.stringify({
        directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
        page: document.location.href,
    }));
});
"""


def find_chromium() -> str | None:
    """The system Chromium: ``chromium`` on PATH, else Debian's /usr/bin/chromium."""
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = find_chromium()
    if found is None:
        why = (
            "the dashboard's browser tests need Chromium, and none was found (looked for "
            "'chromium' on PATH and /usr/bin/chromium): install Debian's package with "
            "'sudo apt-get install chromium' (Playwright's own browser downloads are not used)"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}", pytrace=False)
        pytest.skip(why)
    return found


# Module scope, not session: while the sync Playwright runs, its event loop counts as running
# in this thread, so asyncio.run() fails in it. Pytest ends a module's fixtures before the next
# module's tests (under xdist too), so the other tests of a test process never see that loop.
@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(chromium_path: str, playwright_driver: Playwright) -> Iterator[Browser]:
    """One headless Chromium per test module and process; every test gets its own context."""
    expect.set_options(timeout=ACTION_TIMEOUT_MS)  # the default 5 s is short on a busy machine
    launched = playwright_driver.chromium.launch(
        executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS, timeout=60_000
    )
    yield launched
    launched.close()


class Browse:
    """A browser context (its own cookies) with one page, watched for what must not happen:
    console errors, uncaught page errors and CSP violations are collected in ``problems``.
    Confirm dialogs are accepted, their questions kept in ``dialogs``."""

    def __init__(self, context: BrowserContext, base: str) -> None:
        self.context = context
        self.base = base
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        context.expose_function("__report_csp", self._csp)
        context.add_init_script(_WATCH_SCRIPT)
        self.page = context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("dialog", self._dialog)

    def _csp(self, report: str) -> None:
        self.problems.append(f"CSP violation: {json.loads(report)}")

    def _console(self, message: ConsoleMessage) -> None:
        # The browser's own request for /favicon.ico (the pages name no icon) is not the page's.
        if message.location.get("url", "").endswith("/favicon.ico"):
            return
        if message.type == "error":
            self.problems.append(f"console error at {message.location}: {message.text}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def open(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def document_id(self) -> str:
        """Changes whenever the page is loaded anew: equal values mean no reload happened."""
        value = self.page.evaluate("window.__document_id")
        assert isinstance(value, str)
        return value

    def wait_until(self, check: Callable[[], bool], what: str, timeout_ms: int = 10_000) -> None:
        """Poll ``check`` while letting the page's events through; fail after ``timeout_ms``."""
        deadline = time.monotonic() + timeout_ms / 1000
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.page.wait_for_timeout(20)  # dispatches the browser's events meanwhile

    def screenshot(self, name: str) -> Path:
        """``test-artifacts/dashboard/<name>.png``, rewritten on every run."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True, animations="disabled")
        return path

    def assert_clean(self) -> None:
        assert not self.problems, "the dashboard's pages reported problems:\n" + "\n".join(
            self.problems
        )


BrowseFn = Callable[[str], Browse]


@pytest.fixture
def browse(browser: Browser) -> Iterator[BrowseFn]:
    """``browse(base_url)``: a fresh browser context on the dashboard served at ``base_url``."""
    opened: list[Browse] = []

    def start(base: str) -> Browse:
        context = browser.new_context(viewport=VIEWPORT, base_url=base)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        opened.append(Browse(context, base))
        return opened[-1]

    yield start
    for b in opened:
        try:
            b.context.close()
        except Error:  # the browser is already gone: nothing left to close
            pass


QueueFn = Callable[[str], SyncQueue]


@pytest.fixture
def queue_of() -> Iterator[QueueFn]:
    """``queue_of(url)``: a :class:`SyncQueue` (its loop in a thread of its own: this thread's
    is Playwright's), closed after the test."""
    queues: list[SyncQueue] = []

    def make(url: str) -> SyncQueue:
        queues.append(SyncQueue.from_url(url))
        return queues[-1]

    yield make
    for queue in queues:
        queue.close()


def off_the_loop(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` in a thread: the sync Playwright keeps a loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A SQLite queue file and the means to run ``conveyor worker`` processes on it."""
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}")
    try:
        yield h
    finally:
        h.kill_all()
        h.queue.close()
