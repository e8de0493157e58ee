"""Handles on enqueued jobs (:class:`JobHandle`), and enqueues built for a caller's own
transaction (:class:`PendingEnqueue`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conveyor._connections import AsyncAdapter, adapt, adapt_sync
from conveyor._definition import JobDef
from conveyor._errors import JobFailed, JobNotFound, ResultTimeout
from conveyor._jobinfo import JobInfo
from conveyor.drivers.records import ChangeResult, InsertResult, InsertStatus, JobState, NewJob
from conveyor.drivers.transactional import TransactionalWriter, run_plan, run_plan_async

if TYPE_CHECKING:
    from conveyor._queue import Queue

R = TypeVar("R")


class JobHandle(Generic[R]):
    """A reference to an enqueued job; ``await handle.result()`` is typed by its definition."""

    def __init__(
        self,
        queue: Queue,
        job_id: str,
        definition: JobDef[Any, R] | None,
        duplicate: bool,
        outcome: InsertStatus | None = None,
    ) -> None:
        self.queue = queue
        self.id = job_id
        self.definition = definition
        # No new job was made: the handle points at one that existed (``outcome`` says why).
        self.duplicate = duplicate
        # What the enqueue did: INSERTED, DUPLICATE (of an id or a held dedup key) or REPLACED
        # (a debounced job took the new payload and run time); None for ``Queue.handle``.
        self.outcome = outcome

    def __repr__(self) -> str:
        dup = "" if self.outcome in (None, InsertStatus.INSERTED) else f", {self.outcome}"
        return f"JobHandle({self.id!r}{dup})"

    async def info(self) -> JobInfo:
        info = await self.queue.get(self.id)
        if info is None:
            raise JobNotFound(self.id)
        return info

    async def cancel(self) -> ChangeResult:
        (result,) = await self.queue.cancel([self.id])
        return result

    async def result(self, timeout: float | None = None, *, poll: float = 0.5) -> R:
        """Wait for the job to finish and return its result.

        Raises :class:`JobFailed` if it ended failed or cancelled, :class:`ResultTimeout` after
        ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.005
        while True:
            info = await self.info()
            if info.state is JobState.COMPLETED:
                return self._decode(info)
            if info.state in (JobState.FAILED, JobState.CANCELLED):
                raise JobFailed(self.id, info.state.value, info.error)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(self.id, timeout or 0.0, info.state.value)
            wait = interval if deadline is None else min(interval, deadline - time.monotonic())
            await asyncio.sleep(max(wait, 0.0))
            interval = min(interval * 2, poll)

    def _decode(self, info: JobInfo) -> R:
        data = info.result_json if info.result_json is not None else b"null"
        if self.definition is None:
            untyped: R = info.result
            return untyped
        return self.definition.decode_result(data)


class PendingEnqueue:
    """Jobs validated and built, and the writer that will write them with a connection of the
    caller's, inside its transaction: :meth:`write` in the caller's thread with a blocking
    connection, :meth:`write_async` in the caller's coroutine with either kind."""

    def __init__(
        self,
        queue: Queue,
        jobs: list[NewJob],
        definitions: Sequence[JobDef[Any, Any] | None],
        writer: TransactionalWriter,
        target: str,
    ) -> None:
        self.queue = queue
        self.jobs = jobs
        self.definitions = definitions
        self.writer = writer
        self.target = target  # what the writer writes into, for messages

    def write(self, connection: object) -> list[JobHandle[Any]]:
        adapter = adapt_sync(connection, self.writer.dialect, self.target)
        if not self.jobs:
            return []
        plan = self.writer.insert_plan(self.jobs, now=self.queue.clock.now())
        return handles(self.queue, run_plan(plan, adapter.execute), self.definitions)

    async def write_async(self, connection: object) -> list[JobHandle[Any]]:
        adapter = await adapt(connection, self.writer.dialect, self.target)
        if not self.jobs:
            return []
        plan = self.writer.insert_plan(self.jobs, now=self.queue.clock.now())
        if isinstance(adapter, AsyncAdapter):
            results = await run_plan_async(plan, adapter.execute)
        else:
            results = run_plan(plan, adapter.execute)
        return handles(self.queue, results, self.definitions)


def handles(
    queue: Queue, results: list[InsertResult], definitions: Sequence[JobDef[Any, Any] | None]
) -> list[JobHandle[Any]]:
    return [
        JobHandle(
            queue, result.id, definition, result.status is not InsertStatus.INSERTED, result.status
        )
        for result, definition in zip(results, definitions, strict=True)
    ]
