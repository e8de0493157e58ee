"""SyncQueue: the blocking twin of Queue, used from plain (non-async) code."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor import JobState, SyncJobHandle, SyncQueue, job
from conveyor.drivers.records import ChangeStatus


class Ping(BaseModel):
    n: int


ping = job("test.ping", Ping, result=int)
pong = job("test.pong", Ping, queue="other")


def portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "conveyor-sync-portal"]


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path / 'sync.db'}"


@pytest.fixture
def sync_queue(url: str) -> Iterator[SyncQueue]:
    q = SyncQueue.from_url(url)
    try:
        yield q
    finally:
        q.close()


def test_no_thread_is_started_until_the_first_call(url: str) -> None:
    before = len(portal_threads())
    q = SyncQueue.from_url(url)
    assert len(portal_threads()) == before
    q.enqueue(ping, Ping(n=1))
    assert len(portal_threads()) == before + 1
    q.close()
    assert len(portal_threads()) == before


def test_close_without_a_call_starts_no_thread(url: str) -> None:
    before = len(portal_threads())
    q = SyncQueue.from_url(url)
    q.close()
    q.close()
    assert len(portal_threads()) == before


def test_enqueue_get_and_list(sync_queue: SyncQueue) -> None:
    handle = sync_queue.enqueue(ping, Ping(n=1), job_id="a")
    assert isinstance(handle, SyncJobHandle) and handle.id == "a" and not handle.duplicate
    assert sync_queue.enqueue(ping, Ping(n=1), job_id="a").duplicate
    sync_queue.enqueue(pong, Ping(n=2), job_id="b")
    sync_queue.enqueue_by_name("test.ping", {"n": 3}, job_id="c")

    info = sync_queue.get("a")
    assert info is not None and info.state is JobState.QUEUED and info.payload == {"n": 1}
    assert sync_queue.get("missing") is None
    assert handle.info().id == "a"

    assert [i.id for i in sync_queue.list_jobs()] == ["c", "b", "a"]
    assert [i.id for i in sync_queue.list_jobs(queue="other")] == ["b"]
    assert sync_queue.counts()[JobState.QUEUED] == 3
    assert sync_queue.counts("other")[JobState.QUEUED] == 1
    assert {q.name for q in sync_queue.queues()} == {"default", "other"}


def test_cancel_retry_and_purge(sync_queue: SyncQueue) -> None:
    sync_queue.enqueue(ping, Ping(n=1), job_id="a")
    handle = sync_queue.enqueue(ping, Ping(n=2), job_id="b")

    (cancelled,) = sync_queue.cancel(["a"])
    assert cancelled.status is ChangeStatus.OK
    assert handle.cancel().status is ChangeStatus.OK
    assert sync_queue.get("a").state is JobState.CANCELLED  # type: ignore[union-attr]

    (retried, missing) = sync_queue.retry(["a", "nope"])
    assert retried.status is ChangeStatus.OK and missing.status is ChangeStatus.NOT_FOUND
    assert sync_queue.get("a").state is JobState.QUEUED  # type: ignore[union-attr]

    assert sync_queue.purge(states=["cancelled"]) == 1
    assert sync_queue.get("b") is None

    with pytest.raises(TypeError, match="a list of job ids"):
        sync_queue.retry("a")  # type: ignore[arg-type]

    sync_queue.cancel(["a"])
    sync_queue.enqueue(ping, Ping(n=3), job_id="c")
    deleted, waiting = sync_queue.delete(["a", "c"])
    assert deleted.status is ChangeStatus.OK and sync_queue.get("a") is None
    assert waiting.status is ChangeStatus.WRONG_STATE and waiting.state is JobState.QUEUED
    assert sync_queue.stats(minutes=5) == []


def test_pause_resume_and_workers(sync_queue: SyncQueue) -> None:
    sync_queue.enqueue(ping, Ping(n=1))
    sync_queue.pause("default")
    assert [q.paused for q in sync_queue.queues() if q.name == "default"] == [True]
    sync_queue.resume("default")
    assert [q.paused for q in sync_queue.queues() if q.name == "default"] == [False]
    assert sync_queue.workers() == []


def test_calling_after_close_is_a_clear_error(url: str) -> None:
    q = SyncQueue.from_url(url)
    q.enqueue(ping, Ping(n=1))
    q.close()
    with pytest.raises(RuntimeError, match="SyncQueue is closed"):
        q.get("a")
    with pytest.raises(RuntimeError, match="SyncQueue is closed"):
        q.list_jobs()


def test_context_manager_closes(url: str) -> None:
    before = len(portal_threads())
    with SyncQueue.from_url(url) as q:
        q.enqueue(ping, Ping(n=1), job_id="a")
        assert q.get("a") is not None
    assert len(portal_threads()) == before
    with pytest.raises(RuntimeError, match="closed"):
        q.get("a")


def test_many_threads_share_one_portal(sync_queue: SyncQueue) -> None:
    before = len(portal_threads())

    def enqueue(i: int) -> str:
        return sync_queue.enqueue(ping, Ping(n=i), job_id=f"job-{i}").id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(enqueue, range(40)))
    assert sorted(ids) == sorted(f"job-{i}" for i in range(40))
    assert len(portal_threads()) == before + 1
    assert len(sync_queue.list_jobs(limit=100)) == 40


def test_close_cancels_a_call_still_waiting_instead_of_hanging_it(url: str) -> None:
    q = SyncQueue.from_url(url)
    handle = q.enqueue(ping, Ping(n=1))  # no worker: result() would wait forever
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            handle.result()
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 10
    while not (q._loop and asyncio.all_tasks(q._loop)):  # the waiter is inside result()
        assert time.monotonic() < deadline, "result() never started"
        time.sleep(0.005)
    q.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], CancelledError)
