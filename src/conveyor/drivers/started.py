"""Inserts sent before the caller's task lets go of the event loop, for drivers that can.

A burst of concurrent ``enqueue`` calls in one process (a web server under load) is written in
batches (:mod:`conveyor._coalesce`). With one batch written at a time, the server's work on a
batch and the callers' own Python (validating and encoding the next payloads) take turns, the
one idle while the other runs. A driver whose connection answers commands in the order they
were sent can overlap them: it writes a batch's command at once, from the task that filled the
batch, while the other callers of the same pass of the loop are still building theirs, and
several such writes may be in flight. A coroutine cannot do that: a task made to write would
first run in the loop's next pass, after every other caller of this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from conveyor.drivers.records import InsertResult, NewJob


@runtime_checkable
class StartsInserts(Protocol):
    @property
    def can_start_inserts(self) -> bool:
        """Whether :meth:`start_insert` can ever send (false where the deployment this driver
        is connected to rules it out)."""
        ...

    def start_insert(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> asyncio.Future[list[InsertResult]] | None:
        """``job_insert_many(jobs, now=now)`` with its write sent before this returns, when
        that needs no wait (no round trip first, a connection ready to write on): a future of
        the same results (a task that reads the reply), to be awaited. None when it cannot be
        sent so (nothing was sent); the caller then awaits ``job_insert_many``. Never raises:
        anything the usual path would refuse is left to it."""
        ...
