"""A blocking portal for sync callers (Django views, Flask, scripts).

The async :class:`Queue` runs on a private event loop in a daemon thread; each sync call submits
a coroutine there and waits. One portal serves any number of threads. Enqueues skip that hop
where the driver can write from any thread (Redis, SQLite; see :mod:`conveyor.drivers.blocking`):
the job is built and written in the caller's thread, one blocking round trip, and threads that
enqueue at the same time share writes (:class:`conveyor._coalesce.ThreadCoalescer`). The
thread starts on the first call, not in the constructor, so creating a ``SyncQueue`` at import
time is cheap; create one per process and :meth:`SyncQueue.close` it at shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from conveyor._coalesce import ThreadCoalescer
from conveyor._dedup import DedupPolicy
from conveyor._definition import DEFAULT_ATTEMPTS, JobDef, JobRequest
from conveyor._handle import JobHandle, handles
from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor.drivers.records import (
    ChangeResult,
    CronInfo,
    InsertStatus,
    JobState,
    QueueInfo,
    QueueStats,
    WorkerInfo,
)
from conveyor.engine import BlockingInserts

T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P", bound=BaseModel)


class SyncQueue:
    """The :class:`Queue` API, blocking: ``sync_queue.enqueue(defn, payload)``.

    Create one per process (e.g. ``sync_queue = SyncQueue.from_url()`` at module level) and
    reuse it from any thread; each instance owns one event-loop thread and one connection, both
    opened by the first call, and on Redis and SQLite one blocking connection its enqueues are
    written on, from the callers' threads; :meth:`close` (or leaving a ``with`` block) releases
    them.
    """

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._calls: set[asyncio.Task[Any]] = set()
        # The blocking writer of enqueues made in the callers' threads (see _blocking_writer).
        self._writer: _BlockingWriter | None = None
        self._writer_known = False
        self._writer_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> SyncQueue:
        """A portal on ``url``, else ``$CONVEYOR_URL``, else ``$REDIS_URL``, else
        ``sqlite:///conveyor.db``."""
        return cls(Queue.from_url(url, **options))

    @property
    def closed(self) -> bool:
        return self._closed

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the portal's event loop and wait for its result."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a SyncQueue cannot be called from its own event loop; use .queue")
        with self._lock:  # submissions are ordered before close()'s shutdown
            if self._closed:
                coro.close()
                raise RuntimeError(
                    "this SyncQueue is closed; create one SyncQueue per process and close it "
                    "only at shutdown"
                )
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="conveyor-sync-portal", daemon=True
                )
                self._thread.start()
            # A traced queue runs the call in the caller's context (its current span).
            context = contextvars.copy_context() if self.queue.traced else None
            future: Future[T] = asyncio.run_coroutine_threadsafe(
                self._tracked(coro, context), self._loop
            )
        return future.result(timeout)

    async def _tracked(
        self, coro: Coroutine[Any, Any, T], context: contextvars.Context | None = None
    ) -> T:
        # Remembered so that close() cancels the callers' calls, never the tasks a backend's
        # client library runs for itself (a connection pool's workers stop when it closes).
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            if context is not None:  # a task of its own in that context; cancelled with this one
                return await asyncio.get_running_loop().create_task(coro, context=context)
            return await coro
        finally:
            self._calls.discard(task)

    def _blocking_writer(self) -> _BlockingWriter | None:
        """The writer of enqueues in the caller's thread, made on first use: the driver's
        blocking inserter (one round trip, no hop to the portal's thread) behind a
        :class:`ThreadCoalescer`, or None when the driver has none (the portal writes)."""
        if self._writer_known:
            return self._writer
        engine = self.call(self.queue.connect())  # the schema exists before a thread writes
        with self._writer_lock:
            if not self._writer_known:
                inserts = engine.blocking_inserter()
                if inserts is not None:
                    coalescer = ThreadCoalescer(
                        lambda jobs, now: inserts.job_insert_many(jobs, now=now)
                    )
                    self._writer = _BlockingWriter(inserts, coalescer)
                self._writer_known = True
        return self._writer

    def _enqueue_here(
        self, writer: _BlockingWriter, requests: Sequence[JobRequest[Any, Any]]
    ) -> list[SyncJobHandle[Any]]:
        queue = self.queue
        with queue.building(requests) as new_jobs:
            now = queue.clock.now()
            if len(new_jobs) == 1 and queue.coalesces:
                results = [writer.coalescer.insert(new_jobs[0], now)]
            else:
                results = writer.inserts.job_insert_many(new_jobs, now=now)
        written = handles(queue, results, [r.definition for r in requests])
        return [SyncJobHandle(self, h) for h in written]

    def close(self) -> None:
        """Cancel calls still running, close the connection and stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.inserts.close()
        if loop is None or thread is None:
            return  # never used: no thread, no connection
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()

    async def _shutdown(self) -> None:
        pending = list(self._calls)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.queue.close()

    def __enter__(self) -> SyncQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- enqueue -------------------------------------------------------------------------------

    def enqueue(
        self,
        definition: JobDef[P, R],
        payload: P,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        attempts: int | None = None,
        connection: object | None = None,
        dedup: DedupPolicy | None = None,
        keep_completed: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
    ) -> SyncJobHandle[R]:
        """See :meth:`Queue.enqueue`. With ``connection=`` (a blocking one: ``sqlite3``,
        ``psycopg.Connection``, a SQLAlchemy ``Session`` or ``Connection``) the job is written
        in this thread, with that connection, inside its transaction: it exists if and only if
        that transaction commits."""
        request = definition.request(
            payload,
            job_id=job_id,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            attempts=attempts,
            dedup=dedup,
            keep_completed=keep_completed,
            keep_failed=keep_failed,
        )
        if connection is None and not self._closed:
            writer = self._writer if self._writer_known else self._blocking_writer()
            if writer is not None:
                return self._enqueue_one(writer, request)
        (handle,) = self.enqueue_many([request], connection=connection)
        return handle

    def _enqueue_one(
        self, writer: _BlockingWriter, request: JobRequest[Any, R]
    ) -> SyncJobHandle[R]:
        """One job written from this thread: :meth:`_enqueue_here` without the lists, as a
        web request enqueues (one call costs about its round trip, so every step counts)."""
        queue = self.queue
        with queue.building((request,)) as (new_job,):
            now = queue.clock.now()
            if queue.coalesces:
                result = writer.coalescer.insert(new_job, now)
            else:
                (result,) = writer.inserts.job_insert_many((new_job,), now=now)
        status = result.status
        handle = JobHandle(
            queue, result.id, request.definition, status is not InsertStatus.INSERTED, status
        )
        return SyncJobHandle(self, handle)

    def enqueue_many(
        self, requests: Sequence[JobRequest[Any, Any]], *, connection: object | None = None
    ) -> list[SyncJobHandle[Any]]:
        if connection is not None:
            # The portal's thread builds the jobs and opens the queue (so its schema exists);
            # the caller's connection writes them here, in the thread that owns it.
            written = self.call(self.queue.pending_many(requests)).write(connection)
        elif not requests or self._closed:
            written = self.call(self.queue.enqueue_many(requests))
        else:
            writer = self._blocking_writer()
            if writer is not None:
                return self._enqueue_here(writer, requests)
            written = self.call(self.queue.enqueue_many(requests))
        return [SyncJobHandle(self, h) for h in written]

    def enqueue_by_name(
        self,
        name: str,
        payload: Mapping[str, Any] | str | bytes,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        queue: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        connection: object | None = None,
        dedup: DedupPolicy | None = None,
        keep_completed: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
        version: int = 1,
    ) -> SyncJobHandle[Any]:
        if connection is not None:
            pending = self.call(
                self.queue.pending_by_name(
                    name,
                    payload,
                    job_id=job_id,
                    delay=delay,
                    run_at=run_at,
                    priority=priority,
                    queue=queue,
                    attempts=attempts,
                    dedup=dedup,
                    keep_completed=keep_completed,
                    keep_failed=keep_failed,
                    version=version,
                )
            )
            (written,) = pending.write(connection)
            return SyncJobHandle(self, written)
        handle = self.call(
            self.queue.enqueue_by_name(
                name,
                payload,
                job_id=job_id,
                delay=delay,
                run_at=run_at,
                priority=priority,
                queue=queue,
                attempts=attempts,
                dedup=dedup,
                keep_completed=keep_completed,
                keep_failed=keep_failed,
                version=version,
            )
        )
        return SyncJobHandle(self, handle)

    # -- inspect and repair: see the Queue methods of the same names ---------------------------

    def handle(self, definition: JobDef[Any, R], job_id: str) -> SyncJobHandle[R]:
        return SyncJobHandle(self, self.queue.handle(definition, job_id))

    def get(self, job_id: str) -> JobInfo | None:
        return self.call(self.queue.get(job_id))

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | Sequence[JobState | str] | None = None,
        name: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[JobInfo]:
        return self.call(
            self.queue.list_jobs(
                queue=queue, state=state, name=name, before_seq=before_seq, limit=limit
            )
        )

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        return self.call(self.queue.counts(queue))

    def retry(self, job_ids: Sequence[str]) -> list[ChangeResult]:
        return self.call(self.queue.retry(job_ids))

    def cancel(self, job_ids: Sequence[str]) -> list[ChangeResult]:
        return self.call(self.queue.cancel(job_ids))

    def purge(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState | str] = (JobState.FAILED,),
        older_than: timedelta | None = None,
    ) -> int:
        return self.call(self.queue.purge(queue=queue, states=states, older_than=older_than))

    def delete(self, job_ids: Sequence[str]) -> list[ChangeResult]:
        return self.call(self.queue.delete(job_ids))

    def stats(self, *, minutes: int = 60, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return self.call(self.queue.stats(minutes=minutes, queues=queues))

    def queues(self) -> list[QueueInfo]:
        return self.call(self.queue.queues())

    def pause(self, queue: str) -> None:
        self.call(self.queue.pause(queue))

    def resume(self, queue: str) -> None:
        self.call(self.queue.resume(queue))

    def workers(self) -> list[WorkerInfo]:
        return self.call(self.queue.workers())

    def schedules(self) -> list[CronInfo]:
        return self.call(self.queue.schedules())


@dataclass(frozen=True, slots=True)
class _BlockingWriter:
    inserts: BlockingInserts
    coalescer: ThreadCoalescer


class SyncJobHandle(Generic[R]):
    """The blocking twin of :class:`JobHandle`."""

    def __init__(self, portal: SyncQueue, handle: JobHandle[R]) -> None:
        self._portal = portal
        self.handle = handle
        self.id = handle.id
        self.duplicate = handle.duplicate
        self.outcome = handle.outcome

    def __repr__(self) -> str:
        return f"Sync{self.handle!r}"

    def info(self) -> JobInfo:
        return self._portal.call(self.handle.info())

    def cancel(self) -> ChangeResult:
        return self._portal.call(self.handle.cancel())

    def result(self, timeout: float | None = None) -> R:
        return self._portal.call(self.handle.result(timeout))
