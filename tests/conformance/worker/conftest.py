"""Fixtures of the worker conformance suite; ``backend_url`` comes from tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor import FakeClock, Queue
from tests.conformance.worker.helpers import Harness


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def queue(backend_url: str, clock: FakeClock) -> AsyncIterator[Queue]:
    """The producer's queue; it shares the workers' fake clock so enqueue times line up."""
    q = Queue.from_url(backend_url, clock=clock)
    await q.connect()
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
async def harness(queue: Queue, clock: FakeClock) -> AsyncIterator[Harness]:
    h = Harness(queue, clock)
    try:
        yield h
    finally:
        await h.aclose()
