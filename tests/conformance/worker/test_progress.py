"""Progress through a real worker: ``ctx.progress`` returns at once, is written in the
background, shows through ``Queue.get`` and the handle while the job runs, and the last value a
handler reports is stored before its outcome, from async and sync handlers alike."""

from __future__ import annotations

import asyncio
import threading

from conveyor import InvalidArgument, JobContext, JobState, Queue, job
from tests.conformance.worker.helpers import Harness, Num, get_info, wait_for, wait_state

stepped = job("test.progress.stepped", Num, result=int)
sync_stepped = job("test.progress.sync", Num, result=int)
misused = job("test.progress.misused", Num, result=str)
kept_briefly = job("test.progress.kept", Num, result=int, keep_completed=0)


async def test_progress_shows_while_running_and_the_last_value_is_kept(
    harness: Harness, queue: Queue
) -> None:
    release = asyncio.Event()
    worker = harness.worker()

    @worker.handles(stepped)
    async def handle(payload: Num, ctx: JobContext) -> int:
        ctx.progress(0.25, "a quarter")
        await release.wait()
        ctx.progress(0.5)
        ctx.progress(1.0, "done")  # only the latest value of a job is written
        return payload.n

    harness.start(worker)
    handle_ = await queue.enqueue(stepped, Num(n=7))

    async def shown() -> bool:
        info = await handle_.info()
        return info.progress == 0.25

    await wait_for(shown, what="progress 0.25 visible while the job runs")
    running = await get_info(queue, handle_.id)
    assert running.state is JobState.ACTIVE
    assert running.progress_message == "a quarter" and running.progress_at is not None
    release.set()
    assert await handle_.result(timeout=10) == 7
    done = await handle_.info()
    assert (done.state, done.progress, done.progress_message) == (
        JobState.COMPLETED,
        1.0,
        "done",
    )


async def test_a_sync_handler_reports_progress_from_its_thread(
    harness: Harness, queue: Queue
) -> None:
    worker = harness.worker()
    threads: list[str] = []

    @worker.handles(sync_stepped)
    def handle(payload: Num, ctx: JobContext) -> int:
        threads.append(threading.current_thread().name)
        for step in range(1, 5):
            ctx.progress(step / 4, f"step {step} of 4")
        return payload.n

    harness.start(worker)
    handle_ = await queue.enqueue(sync_stepped, Num(n=3))
    assert await handle_.result(timeout=10) == 3
    info = await handle_.info()
    assert (info.progress, info.progress_message) == (1.0, "step 4 of 4")
    assert threads and threads[0] != threading.main_thread().name


async def test_misusing_progress_raises_in_the_handler(harness: Harness, queue: Queue) -> None:
    worker = harness.worker()

    @worker.handles(misused)
    async def handle(payload: Num, ctx: JobContext) -> str:
        problems = []
        for fraction in (1.5, -1, float("nan")):
            try:
                ctx.progress(fraction)
            except InvalidArgument as exc:
                problems.append(str(exc))
        ctx.progress(0.5, "x" * 2000)  # a long message is cut, never a failure
        return f"{len(problems)} refused"

    harness.start(worker)
    handle_ = await queue.enqueue(misused, Num(n=1))
    assert await handle_.result(timeout=10) == "3 refused"
    info = await handle_.info()
    assert info.progress == 0.5 and info.progress_message == "x" * 500


async def test_remove_on_completion_makes_the_result_unreadable(
    harness: Harness, queue: Queue
) -> None:
    worker = harness.worker()

    @worker.handles(kept_briefly)
    async def handle(payload: Num, ctx: JobContext) -> int:
        return payload.n

    handle_ = await queue.enqueue(kept_briefly, Num(n=5))
    kept = await queue.enqueue(kept_briefly, Num(n=6), keep_completed=3600)
    harness.start(worker)
    await wait_state(queue, kept.id, JobState.COMPLETED)

    async def gone() -> bool:
        return await queue.get(handle_.id) is None

    await wait_for(gone, what="the job with keep_completed=0 pruned by maintenance")
    assert await kept.result(timeout=10) == 6  # its own TTL keeps it
