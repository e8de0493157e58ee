"""Test queues: the in-memory driver on a fake clock, and the store behind a queue."""

from __future__ import annotations

from conveyor._queue import Queue
from conveyor._sync import SyncQueue
from conveyor.backends.memory import MemoryDriver, MemoryStore
from conveyor.core.clock import Clock


def memory_queue(clock: Clock | None = None, *, store: MemoryStore | None = None) -> Queue:
    """A :class:`Queue` on the in-memory driver, on ``clock`` (a ``FakeClock`` in tests),
    over ``store`` (default: a new, private one). Payloads are encoded and validated at
    enqueue, and the worker decodes and validates them again, as on every backend: only the
    storage differs."""
    return Queue(MemoryDriver("memory://", MemoryStore() if store is None else store), clock=clock)


def as_queue(queue: Queue | SyncQueue) -> Queue:
    return queue.queue if isinstance(queue, SyncQueue) else queue


def memory_store(queue: Queue | SyncQueue, purpose: str) -> MemoryStore:
    """The store of a queue on the in-memory driver; a clear ``TypeError`` for any other."""
    driver = as_queue(queue).driver.driver
    if not isinstance(driver, MemoryDriver):
        raise TypeError(
            f"{purpose} needs a queue on the in-memory driver (the conveyor_queue fixture, or "
            f"Queue.from_url('memory://')), got one on {type(driver).__name__}"
        )
    return driver.store
