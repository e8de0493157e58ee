"""The batching of ``conveyor._coalesce`` on its own, over a stand-in for ``job_insert_many``
(the conformance suite runs it on every backend): how calls are grouped, and what each caller
gets when a batch is refused or fails."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from conveyor import BackendUnavailable, InvalidArgument
from conveyor._coalesce import Coalescer, ThreadCoalescer
from conveyor.drivers.records import InsertResult, InsertStatus, JobState, NewJob


def new(job_id: str) -> NewJob:
    return NewJob(id=job_id, queue="default", name="n", payload=b"{}")


class Store:
    """Inserts by id, refusing a whole batch that holds an id starting with ``bad`` (as a
    driver refuses a batch with a job it cannot store) and failing while ``down``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.ids: set[str] = set()
        self.down = False

    def write(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        self.batches.append([j.id for j in jobs])
        if self.down:
            raise BackendUnavailable("connection dropped")
        if any(j.id.startswith("bad") for j in jobs):
            raise InvalidArgument("refused")
        results = []
        for job in jobs:
            status = InsertStatus.DUPLICATE if job.id in self.ids else InsertStatus.INSERTED
            self.ids.add(job.id)
            results.append(InsertResult(job.id, status, JobState.QUEUED))
        return results


async def test_calls_during_a_write_go_together_in_the_next_and_a_lone_call_at_once() -> None:
    store = Store()

    async def insert_many(jobs: Sequence[NewJob], now: float | None) -> list[InsertResult]:
        await asyncio.sleep(0.01)
        return store.write(jobs)

    coalescer = Coalescer(insert_many, max_batch=4)
    ids = [f"j{i}" for i in range(10)]
    results = await asyncio.gather(*(coalescer.insert(new(i), None) for i in ids))
    assert [r.id for r in results] == ids
    assert store.batches == [["j0"], ["j1", "j2", "j3", "j4"], ["j5", "j6", "j7", "j8"], ["j9"]]
    await coalescer.insert(new("lone"), None)
    assert store.batches[-1] == ["lone"]


async def test_a_refused_batch_is_written_job_by_job_and_a_failed_one_fails_each_caller() -> None:
    store = Store()

    async def insert_many(jobs: Sequence[NewJob], now: float | None) -> list[InsertResult]:
        await asyncio.sleep(0.01)
        return store.write(jobs)

    coalescer = Coalescer(insert_many)
    ids = ["first", "a", "bad-b", "c", "a"]
    outcomes = await asyncio.gather(
        *(coalescer.insert(new(i), None) for i in ids), return_exceptions=True
    )
    assert isinstance(outcomes[2], InvalidArgument)
    assert [o.status for o in outcomes if isinstance(o, InsertResult)] == [
        InsertStatus.INSERTED,
        InsertStatus.INSERTED,
        InsertStatus.INSERTED,
        InsertStatus.DUPLICATE,
    ]
    store.down = True
    outcomes = await asyncio.gather(
        *(coalescer.insert(new(f"x{i}"), None) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, BackendUnavailable) for o in outcomes)
    assert len(store.batches[-2:]) == 2  # the lone call, then the rest together: no retries


def test_threads_share_writes_and_keep_their_own_outcomes() -> None:
    store = Store()
    gate = threading.Lock()

    def insert_many(jobs: Sequence[NewJob], now: float | None) -> list[InsertResult]:
        with gate:  # held by the test while the threads pile up behind the first write
            return store.write(jobs)

    coalescer = ThreadCoalescer(insert_many)
    outcomes: dict[int, InsertResult | BaseException] = {}
    ids = ["t0", *(f"t{i}" for i in range(1, 20)), "bad-1", "t3"]

    def call(n: int) -> None:
        try:
            outcomes[n] = coalescer.insert(new(ids[n]), None)
        except Exception as exc:
            outcomes[n] = exc

    gate.acquire()
    first = threading.Thread(target=call, args=(0,))
    first.start()
    while not coalescer._busy:  # pyright: ignore[reportPrivateUsage]
        pass
    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, len(ids))]
    for t in threads:
        t.start()
    while len(coalescer._waiting) < len(threads):  # pyright: ignore[reportPrivateUsage]
        pass
    gate.release()
    for t in [first, *threads]:
        t.join()
    assert store.batches[0] == ["t0"]
    assert sorted(store.batches[1]) == sorted(ids[1:])  # one batch, refused: then one by one
    assert len(store.batches) == 2 + len(ids) - 1
    assert isinstance(outcomes[ids.index("bad-1")], InvalidArgument)
    twins = [outcomes[3], outcomes[len(ids) - 1]]
    assert sorted(o.status.value for o in twins if isinstance(o, InsertResult)) == [
        "duplicate",
        "inserted",
    ]
    assert all(isinstance(outcomes[n], InsertResult) for n in range(len(ids)) if n != 20)


@pytest.mark.parametrize("count", [1, 5])
def test_a_failed_thread_batch_fails_each_caller(count: int) -> None:
    store = Store()
    store.down = True
    coalescer = ThreadCoalescer(lambda jobs, now: store.write(jobs))
    for i in range(count):
        with pytest.raises(BackendUnavailable):
            coalescer.insert(new(f"j{i}"), None)
    assert not coalescer._busy  # pyright: ignore[reportPrivateUsage]


class _Interrupted(BaseException):
    """What a signal handler raises in the main thread, as KeyboardInterrupt would."""


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_a_waiting_caller_interrupted_leaves_and_the_others_are_still_written() -> None:
    """A thread waiting for the write before its own is interrupted (the main thread on ^C):
    it leaves the waiting list, and the thread behind it leads the next batch instead of
    waiting for a writer that is gone."""
    assert threading.current_thread() is threading.main_thread()
    store = Store()
    gate = threading.Event()

    def insert_many(jobs: Sequence[NewJob], now: float | None) -> list[InsertResult]:
        assert gate.wait(timeout=10), "the test never let the write finish"
        return store.write(jobs)

    coalescer = ThreadCoalescer(insert_many)
    waiting = coalescer._waiting  # pyright: ignore[reportPrivateUsage]
    results: dict[str, InsertResult] = {}

    def call(job_id: str) -> None:
        results[job_id] = coalescer.insert(new(job_id), None)

    def interrupt_the_main_thread() -> None:
        _until(lambda: len(waiting) == 1, "the main thread to wait")
        later.start()
        _until(lambda: len(waiting) == 2, "a second caller to wait behind it")
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, signal.SIGUSR1)  # the main thread lets the write end then

    def raise_interrupted(signum: int, frame: object) -> None:
        raise _Interrupted

    first = threading.Thread(target=call, args=("a",))
    later = threading.Thread(target=call, args=("c",))
    helper = threading.Thread(target=interrupt_the_main_thread)
    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        first.start()
        _until(lambda: coalescer._busy, "the first write")  # pyright: ignore[reportPrivateUsage]
        helper.start()
        with pytest.raises(_Interrupted):
            coalescer.insert(new("b"), None)
        assert list(waiting) and waiting[0].job.id == "c", "the interrupted caller left"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        gate.set()
        for t in (first, later, helper):
            if t.ident is not None:
                t.join(timeout=10)
    assert not later.is_alive(), "the caller behind the interrupted one was left waiting"
    assert store.batches == [["a"], ["c"]]
    assert {k: v.status for k, v in results.items()} == {
        "a": InsertStatus.INSERTED,
        "c": InsertStatus.INSERTED,
    }
