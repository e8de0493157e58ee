"""Testing Conveyor jobs with pytest: a fake clock, a queue on the in-memory driver, running the
worker's handlers until nothing is due, assertions on what was enqueued, and a context for
calling a handler directly.

Enable the fixtures in your top-level ``conftest.py``::

    pytest_plugins = ["conveyor.testing"]

(or ``-p conveyor.testing`` in pytest's ``addopts``). The helpers (:func:`run_until_idle`,
:func:`assert_enqueued`, :func:`make_context`) are plain functions, importable anywhere.

Fixtures:

* ``conveyor_clock``: a :class:`~conveyor.FakeClock` (``now()``, ``advance(seconds)``), the
  clock of the two queues below; it starts at the real time and moves only when told.
* ``conveyor_queue``: an async :class:`~conveyor.Queue` on the in-memory driver, over a store
  of its own for each test. Payloads are encoded and validated when enqueued, and validated
  again before a handler sees them, as on every backend.
* ``conveyor_sync_queue``: a :class:`~conveyor.SyncQueue` on the same store and clock (for
  sync code: Flask, Django, scripts); closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor._queue import Queue
from conveyor._sync import SyncQueue
from conveyor.core.clock import FakeClock
from conveyor.testing._assertions import assert_enqueued
from conveyor.testing._context import make_context
from conveyor.testing._idle import Attempt, IdleReport, TooManyJobs, run_until_idle
from conveyor.testing._queues import memory_queue, memory_store


@pytest.fixture
def conveyor_clock() -> FakeClock:
    """The fake clock of ``conveyor_queue``: jobs with a delay, retries after a backoff and
    snoozed jobs become due when the test advances it."""
    return FakeClock()


@pytest.fixture
def conveyor_queue(conveyor_clock: FakeClock) -> Queue:
    """An async queue on the in-memory driver (a store of its own), on ``conveyor_clock``."""
    return memory_queue(conveyor_clock)


@pytest.fixture
def conveyor_sync_queue(conveyor_queue: Queue) -> Iterator[SyncQueue]:
    """A sync queue on ``conveyor_queue``'s store and clock."""
    store = memory_store(conveyor_queue, "conveyor_sync_queue")
    sync_queue = SyncQueue(memory_queue(conveyor_queue.clock, store=store))
    try:
        yield sync_queue
    finally:
        sync_queue.close()


__all__ = [
    "Attempt",
    "IdleReport",
    "TooManyJobs",
    "assert_enqueued",
    "conveyor_clock",
    "conveyor_queue",
    "conveyor_sync_queue",
    "make_context",
    "memory_queue",
    "run_until_idle",
]
