"""The lease keeper renews from its own thread, so a handler that blocks the event loop (or
holds the GIL in pure Python) cannot make its job look abandoned. Real time here: the point is
that wall-clock lease expiry does not happen."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor import JobContext, JobState, Queue, job
from conveyor.backends.registry import driver_for_url
from conveyor.core.clock import BackendClock
from conveyor.runtime.maintenance import rescue_expired
from tests.conformance.worker.helpers import Harness, Num, wait_state

# Long enough that a loaded CI machine's hiccups (an fsync, a checkpoint) cannot lapse it at a
# renewal every LEASE / 4; the handlers block for more than twice the lease.
LEASE = 1.2
BLOCK = 2.5 * LEASE

blocking = job("test.blocks_the_loop", Num, result=int, attempts=1)
spinning = job("test.holds_the_gil", Num, result=int, attempts=1)


class Rescuer:
    """Another worker's maintenance: rescues expired leases every few milliseconds from its own
    thread and connection, so it keeps going while the worker's event loop is blocked."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rescued: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        driver = driver_for_url(self.url)
        await driver.open()
        try:
            while not self._stop.is_set():
                for decision, result in await rescue_expired(driver, max_stalls=5, limit=100):
                    if result.status == "ok":
                        self.rescued.append(decision.job_id)
                await asyncio.sleep(0.02)
        finally:
            await driver.close()

    def __enter__(self) -> Rescuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


async def run_once(backend_url: str, harness: Harness, definition_name: str) -> None:
    queue = Queue.from_url(backend_url)
    runs: list[int] = []
    w = harness.worker(
        queue, clock=BackendClock(), lease_seconds=LEASE, lease_renew_interval=LEASE / 4
    )

    @w.handles(blocking)
    async def block_loop(payload: Num, ctx: JobContext) -> int:
        runs.append(ctx.attempt)
        time.sleep(BLOCK)  # deliberately blocks the event loop  # noqa: ASYNC251
        return payload.n

    @w.handles(spinning)
    def hold_gil(payload: Num, ctx: JobContext) -> int:
        runs.append(ctx.attempt)
        deadline = time.monotonic() + BLOCK
        spins = 0
        while time.monotonic() < deadline:
            spins += 1
        return payload.n

    definition = blocking if definition_name == "blocking" else spinning
    with Rescuer(backend_url) as rescuer:
        harness.start(w)
        handle = await queue.enqueue(definition, Num(n=7))
        info = await wait_state(queue, handle.id, JobState.COMPLETED, JobState.FAILED)
    await harness.stop(w)
    await queue.close()
    assert info.state is JobState.COMPLETED, info.error
    assert rescuer.rescued == []
    assert runs == [1]
    assert info.stalls == 0


async def test_a_handler_blocking_the_event_loop_keeps_its_lease(
    backend_url: str, harness: Harness
) -> None:
    await run_once(backend_url, harness, "blocking")


async def test_a_sync_handler_holding_the_gil_keeps_its_lease(
    backend_url: str, harness: Harness
) -> None:
    await run_once(backend_url, harness, "spinning")
