"""Blocking inserts from the caller's own thread, for drivers that can make them.

``SyncQueue.enqueue`` from a plain thread (Django, Flask, a script) would otherwise hop to an
event loop's thread and back for every job; a driver that can write from any thread offers
:meth:`HasBlockingInserter.blocking_inserter`, whose writes cost one blocking round trip. It is
the same insert as ``job_insert_many`` (same checks, same scripts or statements, same results):
only the waiting differs. A driver without one (Redis Cluster, PostgreSQL, memory) is written
through the event loop as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from conveyor.drivers.records import InsertResult, NewJob


class BlockingInserter(Protocol):
    """``job_insert_many`` that blocks the calling thread; safe to call from any thread."""

    def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]: ...

    def close(self) -> None:
        """Release its connection (the next insert opens another)."""
        ...


@runtime_checkable
class HasBlockingInserter(Protocol):
    def blocking_inserter(self) -> BlockingInserter | None:
        """A new inserter with connections of its own, or None when this driver has none
        (e.g. the kind of deployment it is connected to cannot take one)."""
        ...
