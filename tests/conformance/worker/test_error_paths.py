"""Every path from "the handler returned or raised" to "a transition was written" ends in a
written transition: a user's value can fail only its own job, never wedge the worker."""

from __future__ import annotations

import os

from conveyor import Fixed, JobContext, JobState, Queue, job
from tests.conformance.worker.helpers import Harness, Num, wait_state

# What os.fsdecode gives for a file name that is not UTF-8.
NOT_UTF8 = b"caf\xe9".decode("utf-8", "surrogateescape")

files = job("test.files", Num, attempts=2, backoff=Fixed(0))
plain = job("test.plain_after", Num, result=int)


async def test_an_error_message_that_is_not_utf8_is_written_and_wedges_nothing(
    harness: Harness, queue: Queue
) -> None:
    """Before: the batch write failed on the lone surrogate, the item-by-item retry retried it
    forever, and every later outcome queued behind it (their jobs leased until a restart)."""
    worker = harness.worker(concurrency=3)

    @worker.handles(files)
    async def handle(payload: Num, ctx: JobContext) -> None:
        raise FileNotFoundError(f"no such file: {os.fsdecode(b'caf' + bytes([0xE9]))}")

    @worker.handles(plain)
    async def handle_plain(payload: Num, ctx: JobContext) -> int:
        return payload.n

    harness.start(worker)
    bad = await queue.enqueue(files, Num(n=1))
    info = await wait_state(queue, bad.id, JobState.FAILED)
    assert info.error is not None and "caf\\udce9" in info.error
    assert NOT_UTF8 not in info.error
    assert [e.error[:40] for e in info.errors] == [info.error[:40]] * 2
    later = [await queue.enqueue(plain, Num(n=n)) for n in range(5)]
    assert [await h.result(timeout=10) for h in later] == list(range(5))


exits = job("test.exits", Num, attempts=3)
exits_sync = job("test.exits_sync", Num, attempts=3)


async def test_a_handler_that_raises_system_exit_fails_its_job_not_the_worker(
    harness: Harness, queue: Queue
) -> None:
    """Before: ``SystemExit`` or ``KeyboardInterrupt`` from a handler (``sys.exit()`` deep in a
    library) went past ``except Exception`` and ended the worker with every job in it."""
    worker = harness.worker(concurrency=2)

    @worker.handles(exits)
    async def handle(payload: Num, ctx: JobContext) -> None:
        raise SystemExit(3)

    @worker.handles(exits_sync)
    def handle_sync(payload: Num, ctx: JobContext) -> None:
        raise KeyboardInterrupt

    @worker.handles(plain)
    async def handle_plain(payload: Num, ctx: JobContext) -> int:
        return payload.n

    harness.start(worker)
    first = await queue.enqueue(exits, Num(n=1))
    second = await queue.enqueue(exits_sync, Num(n=2))
    for handle_, kind in ((first, "SystemExit"), (second, "KeyboardInterrupt")):
        info = await wait_state(queue, handle_.id, JobState.FAILED)
        assert info.error is not None and info.error.startswith(kind), info.error
        assert info.attempt == 1  # permanent: running it again would exit again
    after = await queue.enqueue(plain, Num(n=7))
    assert await after.result(timeout=10) == 7
