"""``run_until_idle``: run a worker's handlers over a test queue until no job is due.

The jobs run on the real worker (a :class:`Worker` of its own on the test queue, with the
given worker's handlers, middleware, hooks and observers, on the queue's clock): payloads are
validated, timeouts, retries, backoff and failures decided, hooks called, exactly as in
production. Only when it stops differs: as soon as no job of a served queue is running or due
on the queue's clock, which the store tells directly (the in-memory driver keeps it in this
process). A job retried with a backoff, or enqueued with a delay, is due only once the test
advances the clock, so ``run_until_idle`` returns without it and runs it the next time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Literal

from conveyor._definition import JobDef
from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor._sync import SyncQueue
from conveyor._worker import Worker
from conveyor.backends.memory import MemoryDriver, MemoryStore
from conveyor.drivers.records import WAITING_STATES, JobRecord, JobState, TransitionKind
from conveyor.engine import OperationEvent
from conveyor.runtime.observers import Observer, Observers
from conveyor.runtime.waiting import first_of
from conveyor.testing._queues import as_queue, memory_store

# How often the store is looked at between the worker's own signs of progress.
_LOOK_EVERY = 0.005
# Due jobs that this many fetches in a row leave where they are, while nothing runs, are held by
# something only the clock releases (a group's turn): the run is idle then. Should the worker
# stop fetching meanwhile, the same after this many real seconds.
_HELD_FETCHES = 3
_HELD_FOR = 5.0
# How fast the test worker looks for work when idle: it is woken by enqueues anyway.
_POLL_INTERVAL = 0.05


class TooManyJobs(AssertionError):
    """``run_until_idle`` started ``max_jobs`` attempts and jobs were still due (a job that
    re-enqueues itself, or snoozes with no delay, runs for ever)."""

    def __init__(self, message: str, report: IdleReport) -> None:
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt the worker ran, and how it ended (``None``: its lease was lost)."""

    job_id: str
    name: str
    attempt: int
    outcome: TransitionKind | None


@dataclasses.dataclass(frozen=True, slots=True)
class IdleReport:
    """What :func:`run_until_idle` ran.

    ``attempts``: every attempt, in the order they ended. ``jobs``: each job that ran, as it
    stands now (a job its retention already deleted is missing), in the order it first
    started. ``waiting``: the jobs of the served names that wait for the clock (scheduled,
    retrying) or for their turn, e.g. to be advanced to with ``clock.advance``.
    """

    attempts: tuple[Attempt, ...]
    jobs: tuple[JobInfo, ...]
    waiting: tuple[JobInfo, ...]

    @property
    def ids(self) -> list[str]:
        return [info.id for info in self.jobs]

    @property
    def states(self) -> dict[str, JobState]:
        """Job id -> its state now, for each job that ran."""
        return {info.id: info.state for info in self.jobs}

    def of(self, definition: JobDef[Any, Any]) -> list[JobInfo]:
        """The jobs of ``definition`` that ran."""
        return [info for info in self.jobs if info.name == definition.name]

    def in_state(self, state: JobState | str) -> list[JobInfo]:
        return [info for info in self.jobs if info.state == JobState(state)]

    @property
    def completed(self) -> list[JobInfo]:
        return self.in_state(JobState.COMPLETED)

    @property
    def failed(self) -> list[JobInfo]:
        return self.in_state(JobState.FAILED)

    @property
    def next_run_at(self) -> float | None:
        """The earliest time (epoch seconds) a waiting job becomes due, if one waits."""
        due = [info.run_at.timestamp() for info in self.waiting]
        return min(due) if due else None


class _Recorder(Observer):
    def __init__(self) -> None:
        self.fetches = 0
        self.started = 0
        self.started_ids: dict[str, None] = {}  # in the order they first started
        self.attempts: list[Attempt] = []
        self.progress = asyncio.Event()

    def job_started(self, record: JobRecord, now: float) -> None:
        self.started += 1
        self.started_ids.setdefault(record.id, None)
        self.progress.set()

    def job_finished(self, record: JobRecord, kind: TransitionKind | None, duration: float) -> None:
        self.attempts.append(Attempt(record.id, record.name, record.attempt, kind))
        self.progress.set()

    def operation(self, event: OperationEvent) -> None:
        # Engine subscribers hear the lease keeper's thread too; only fetches (made on the
        # worker's event loop) are counted.
        if event.operation == "job_fetch":
            self.fetches += 1
            self.progress.set()


def _test_worker(worker: Worker, queue: Queue, store: MemoryStore, recorder: _Recorder) -> Worker:
    """A worker on ``queue`` with ``worker``'s handlers and extensions, on the queue's clock.
    Its own worker over its own driver of the store: ``worker`` may well be bound to the
    application's production queue, which a test must not touch."""
    config = dataclasses.replace(
        worker.config,
        clock=queue.clock,
        lease_keeper="thread",
        burst=False,
        poll_interval=_POLL_INTERVAL,
    )
    driver = MemoryDriver(queue.url, store)
    own = Queue(driver, clock=queue.clock, max_payload_bytes=queue.max_payload_bytes)
    runner = Worker(own, config=config)
    runner.registry = worker.registry
    runner.middleware = list(worker.middleware)
    runner.hooks = worker.hooks
    runner.observers = Observers([*worker.observers.observers, recorder])
    return runner


def _due(
    store: MemoryStore, runner: Worker, now: float
) -> tuple[bool, list[JobRecord], list[JobRecord]]:
    """(a job of this worker is running, the due jobs it could run, the others waiting)."""
    queues = set(runner.queues)
    names = set(runner.registry.names())
    due: list[JobRecord] = []
    waiting: list[JobRecord] = []
    with store.lock:
        for job in store.jobs.values():
            if job.state is JobState.ACTIVE and job.worker_id == runner.id:
                return True, [], []
            if job.queue not in queues or job.name not in names:
                continue
            if job.state in WAITING_STATES:
                runnable = job.run_at <= now and job.queue not in store.paused
                (due if runnable else waiting).append(job)
    return False, due, waiting


async def run_until_idle(
    queue: Queue | SyncQueue,
    worker: Worker,
    *,
    max_jobs: int = 10_000,
    timeout: float = 60.0,
) -> IdleReport:
    """Run ``worker``'s handlers over ``queue`` (on the in-memory driver, e.g. the
    ``conveyor_queue`` fixture) until no job of the queues it serves is running or due on the
    queue's clock, and report what ran.

    ``worker`` is not started itself and may be bound to another queue (the application's):
    a worker of the same configuration, handlers, middleware, hooks and observers runs here
    instead, on this queue and its clock (cron and ``every`` schedules do not fire: enqueue
    such a job yourself to test it). Raises :class:`TooManyJobs` after ``max_jobs`` attempts
    with jobs still due, ``TimeoutError`` after ``timeout`` real seconds, and what the worker
    raises (``MissingHandlers`` for a declared job without a handler...).
    """
    if max_jobs < 1:
        raise ValueError(f"max_jobs must be 1 or more, got {max_jobs}")
    target = as_queue(queue)
    store = memory_store(target, "run_until_idle")
    recorder = _Recorder()
    async with asyncio.timeout(timeout):
        while True:
            runner = _test_worker(worker, target, store, recorder)
            runner.check()  # before starting anything: a missing handler is the test's error
            ended = await _round(runner, store, recorder, max_jobs)
            due = await _runnable(runner, store)
            # Due jobs after an idle round: a hook enqueued them as the worker stopped.
            if ended != "idle" or not due or recorder.started >= max_jobs:
                break
    report = _report(store, runner, recorder)
    if due and recorder.started >= max_jobs:
        raise TooManyJobs(
            f"run_until_idle started {recorder.started} attempts (max_jobs={max_jobs}) and "
            f"{len(due)} job(s) were still due: does a job enqueue itself, or snooze without "
            "a delay?",
            report,
        )
    return report


_Ended = Literal["idle", "held", "max_jobs", "stopped"]


async def _round(runner: Worker, store: MemoryStore, recorder: _Recorder, max_jobs: int) -> _Ended:
    """Run ``runner`` until it is idle or started ``max_jobs`` attempts, then stop it."""
    unsubscribe = runner.queue.driver.subscribe(recorder.operation)
    task = asyncio.create_task(runner.run(), name="conveyor-testing-worker")
    try:
        ended = await _until_idle(task, store, runner, recorder, max_jobs)
        runner.stop()  # running jobs finish (after max_jobs), fetched ones are handed back
        await task
    finally:
        if not task.done():  # cancelled (a timeout): hand running jobs back at once
            runner.stop(grace=0)
            await asyncio.wait([task], timeout=10)
        unsubscribe()
    return ended


def _now(queue: Queue) -> float:
    now = queue.clock.now()
    return time.time() if now is None else now


async def _until_idle(
    task: asyncio.Task[None],
    store: MemoryStore,
    runner: Worker,
    recorder: _Recorder,
    max_jobs: int,
) -> _Ended:
    """Wait until the worker has nothing to run, or started ``max_jobs`` attempts."""
    held: tuple[tuple[tuple[str, JobState, int], ...], int, float] | None = None
    loop = asyncio.get_running_loop()
    while not task.done():
        if recorder.started >= max_jobs:
            return "max_jobs"
        running, due, _ = _due(store, runner, _now(runner.queue))
        if not running:
            due = await _not_rate_held(runner, due)
            if not due:
                return "idle"
            # Due, yet not taken: e.g. a group's turn that only the clock brings. Nothing
            # changing for a while, with the worker fetching all along, says so.
            seen = _signature(due)
            if held is None or held[0] != seen:
                held = (seen, recorder.fetches, loop.time())
            elif recorder.fetches - held[1] >= _HELD_FETCHES or loop.time() - held[2] >= _HELD_FOR:
                return "held"
        else:
            held = None
        recorder.progress.clear()
        await first_of(recorder.progress.wait(), asyncio.sleep(_LOOK_EVERY), _ended(task))
    return "stopped"  # the worker stopped on its own: awaiting it raises why


async def _not_rate_held(runner: Worker, due: list[JobRecord]) -> list[JobRecord]:
    """``due`` without the jobs of queues whose rate limit allows no start now."""
    limits = runner.rate_limits()
    if not due or not limits:
        return due
    driver = await runner.queue.connect()
    held = await driver.rate_limit_wait(limits, now=runner.queue.clock.now())
    return [job for job in due if job.queue not in held]


async def _runnable(runner: Worker, store: MemoryStore) -> list[JobRecord]:
    return await _not_rate_held(runner, _due(store, runner, _now(runner.queue))[1])


def _signature(records: Sequence[JobRecord]) -> tuple[tuple[str, JobState, int], ...]:
    return tuple(sorted((r.id, r.state, r.attempt) for r in records))


async def _ended(task: asyncio.Task[None]) -> None:
    await asyncio.wait([task])


def _report(store: MemoryStore, runner: Worker, recorder: _Recorder) -> IdleReport:
    with store.lock:
        ran = [store.jobs.get(job_id) for job_id in recorder.started_ids]
    _, due, waiting = _due(store, runner, _now(runner.queue))
    return IdleReport(
        attempts=tuple(recorder.attempts),
        jobs=tuple(JobInfo.from_record(r) for r in ran if r is not None),
        waiting=tuple(JobInfo.from_record(r) for r in sorted([*due, *waiting], key=_order)),
    )


def _order(record: JobRecord) -> tuple[float, int]:
    return (record.run_at, record.seq)
