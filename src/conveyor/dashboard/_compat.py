"""Which of the newer driver operations this queue's backend has: per-minute throughput
(``stats_read``) and deleting single finished jobs (``job_delete_many``). A backend without one
shows "not recorded" / no delete button instead of an error on every page."""

from __future__ import annotations

from conveyor._queue import Queue


def _has(queue: Queue, operation: str) -> bool:
    return callable(getattr(type(queue.driver.driver), operation, None))


def has_stats(queue: Queue) -> bool:
    return _has(queue, "stats_read")


def can_delete(queue: Queue) -> bool:
    return _has(queue, "job_delete_many")
