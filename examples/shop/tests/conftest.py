"""Fixtures of the shop's handler tests: the ``conveyor.testing`` plugin (an in-memory queue
that validates payloads like a real backend, a fake clock), a real SQLite database with the
shop's tables, a real SMTP server and a real webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from conveyor import Queue, Worker
from examples.shop.local.smtp_sink import SmtpSink
from examples.shop.local.webhook_receiver import WebhookReceiver
from examples.shop.models import Database
from examples.shop.worker.handlers import Handlers, build_worker
from examples.shop.worker.mail import Mailer

pytest_plugins = ["conveyor.testing"]


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'shop.db'}")
    await db.create_tables()
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def handlers(database: Database, smtp_sink: SmtpSink) -> Handlers:
    return Handlers(database.sessions, Mailer("127.0.0.1", smtp_sink.port, "shop@example.com"))


@pytest.fixture
def worker(conveyor_queue: Queue, handlers: Handlers) -> Worker:
    """The production worker's wiring (every handler, the schedule) on the test queue."""
    return build_worker(conveyor_queue, handlers, session_cleanup_every=timedelta(hours=1))
