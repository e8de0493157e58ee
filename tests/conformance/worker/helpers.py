"""Shared pieces of the worker conformance suite: payloads, fast config, bounded waits."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from conveyor import FakeClock, JobContext, JobInfo, JobState, Queue, Worker, WorkerConfig, job
from conveyor.core.clock import Clock

WAIT_TIMEOUT = 10.0


class Num(BaseModel):
    n: int


class Text(BaseModel):
    text: str


def fast_config(clock: Clock | None = None, **overrides: Any) -> WorkerConfig:
    """A worker that polls, renews, heartbeats and does maintenance every few milliseconds."""
    knobs: dict[str, Any] = {
        "concurrency": 5,
        "poll_interval": 0.02,
        "maintenance_interval": 0.05,
        "heartbeat_interval": 0.1,
        "lease_seconds": 30.0,
        "lease_renew_interval": 0.05,
        "shutdown_grace": 5.0,
    }
    if clock is not None:
        knobs["clock"] = clock
    knobs.update(overrides)
    return WorkerConfig(**knobs)


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = WAIT_TIMEOUT,
    *,
    interval: float = 0.01,
    what: str | None = None,
) -> Any:
    """Poll ``predicate`` (sync, or returning an awaitable) until it gives something truthy;
    fail after ``timeout`` seconds. Returns the truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)


async def get_info(queue: Queue, job_id: str) -> JobInfo:
    info = await queue.get(job_id)
    assert info is not None, f"job {job_id} does not exist"
    return info


async def wait_state(
    queue: Queue, job_id: str, *states: JobState, timeout: float = WAIT_TIMEOUT
) -> JobInfo:
    """Wait until the job is in one of ``states`` and return its snapshot."""
    last: list[JobInfo | None] = [None]

    async def reached() -> JobInfo | None:
        info = await queue.get(job_id)
        last[0] = info
        return info if info is not None and info.state in states else None

    try:
        info: JobInfo = await wait_for(reached, timeout)
        return info
    except AssertionError:
        seen = last[0]
        raise AssertionError(
            f"job {job_id} not {'/'.join(states)} within {timeout}s; last seen: "
            f"{seen.state if seen else 'missing'} (attempt {seen.attempt if seen else '-'}, "
            f"error {seen.error if seen else None!r})"
        ) from None


async def total_jobs(queue: Queue) -> int:
    return sum((await queue.counts()).values())


async def unfinished(queue: Queue) -> int:
    counts = await queue.counts()
    return sum(n for state, n in counts.items() if not state.is_terminal)


class Harness:
    """Starts workers as tasks and always stops them, even when a test fails."""

    def __init__(self, queue: Queue, clock: FakeClock) -> None:
        self.queue = queue
        self.clock = clock
        self._tasks: dict[Worker, asyncio.Task[None]] = {}

    def worker(self, queue: Queue | None = None, **config: Any) -> Worker:
        clock = config.pop("clock", self.clock)
        jobs = config.pop("jobs", None)
        return Worker(queue or self.queue, jobs=jobs, config=fast_config(clock, **config))

    def start(self, worker: Worker) -> asyncio.Task[None]:
        task = asyncio.create_task(worker.run(), name=f"test-worker-{worker.id}")
        self._tasks[worker] = task
        return task

    async def stop(self, worker: Worker, *, grace: float | None = None) -> None:
        task = self._tasks.pop(worker)
        worker.stop(grace=grace)
        await asyncio.wait_for(task, WAIT_TIMEOUT)

    async def registered(self, worker: Worker) -> None:
        """Wait until ``worker`` has started and sent its first heartbeat."""

        async def seen() -> bool:
            task = self._tasks.get(worker)
            if task is not None and task.done():
                task.result()  # surface a startup error
            return any(w.id == worker.id for w in await self.queue.workers())

        await wait_for(seen, what=f"worker {worker.id} registered")

    async def aclose(self) -> None:
        """Stop every worker; then re-raise the first crash of one, which a test that only
        looked at job states would otherwise never see."""
        crashes: list[BaseException] = []
        for worker, task in list(self._tasks.items()):
            worker.stop(grace=0)
            try:
                await asyncio.wait_for(task, WAIT_TIMEOUT)
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                crashes.append(exc)
        self._tasks.clear()
        if crashes:
            raise crashes[0]


probe = job("test.probe", Num, result=int)


def add_probe(worker: Worker) -> None:
    """Let ``worker`` serve :data:`probe`, a job used to prove the worker has fetched since."""

    async def handle_probe(payload: Num, ctx: JobContext) -> int:
        return payload.n

    worker.register(probe, handle_probe)


async def probe_round(queue: Queue, *, queue_name: str | None = None) -> None:
    """Enqueue a probe and wait for its result: every job that was runnable when it was enqueued
    has been fetched by then (the worker fetches in priority, then enqueue order)."""
    handle = await queue.enqueue(probe, Num(n=1), queue=queue_name)
    assert await handle.result(timeout=WAIT_TIMEOUT) == 1
