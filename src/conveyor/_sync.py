"""A blocking portal for sync callers (Django views, Flask, scripts).

The async :class:`Queue` runs on a private event loop in a daemon thread; each sync call submits
a coroutine there and waits. One portal serves any number of threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from conveyor._definition import DEFAULT_ATTEMPTS, DEFAULT_QUEUE, JobDef, JobRequest
from conveyor._jobinfo import JobInfo
from conveyor._queue import JobHandle, Queue

T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P", bound=BaseModel)


class SyncQueue:
    """``SyncQueue.from_url(url).enqueue(defn, payload)``: the :class:`Queue` API, blocking."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="conveyor-sync-portal", daemon=True
        )
        self._thread.start()
        self._closed = False

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> SyncQueue:
        return cls(Queue.from_url(url, **options))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this SyncQueue is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self.call(self.queue.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
    ) -> SyncJobHandle[R]:
        handle = self.call(
            self.queue.enqueue(
                definition,
                payload,
                job_id=job_id,
                delay=delay,
                run_at=run_at,
                priority=priority,
                queue=queue,
                attempts=attempts,
            )
        )
        return SyncJobHandle(self, handle)

    def enqueue_many(self, requests: Sequence[JobRequest[Any, Any]]) -> list[SyncJobHandle[Any]]:
        handles = self.call(self.queue.enqueue_many(requests))
        return [SyncJobHandle(self, h) for h in handles]

    def enqueue_by_name(
        self,
        name: str,
        payload: Mapping[str, Any] | str | bytes,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        queue: str = DEFAULT_QUEUE,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> SyncJobHandle[Any]:
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
            )
        )
        return SyncJobHandle(self, handle)

    def get(self, job_id: str) -> JobInfo | None:
        return self.call(self.queue.get(job_id))


class SyncJobHandle(Generic[R]):
    def __init__(self, portal: SyncQueue, handle: JobHandle[R]) -> None:
        self._portal = portal
        self.handle = handle
        self.id = handle.id
        self.duplicate = handle.duplicate

    def __repr__(self) -> str:
        return f"Sync{self.handle!r}"

    def info(self) -> JobInfo:
        return self._portal.call(self.handle.info())

    def result(self, timeout: float | None = None) -> R:
        return self._portal.call(self.handle.result(timeout))
