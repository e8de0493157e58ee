"""The per-minute counts a worker keeps are written once each, even when shutdown cancels the
loop that was writing them: the worker's last flush waits for that write, then writes the rest.
(Before, a cancel that landed while the loop's write was in flight lost the counts it had
taken: `test_observers_and_per_minute_counts[redis]` read no completions under load.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from conveyor.backends.memory import MemoryDriver
from conveyor.core.clock import FakeClock
from conveyor.drivers.records import JobRecord, QueueStats, TransitionKind
from conveyor.engine import Engine
from conveyor.runtime.throughput import ThroughputCounter
from tests.unit.records import active_record

NOW = 1_700_000_000.0


class GatedDriver(MemoryDriver):
    """The in-memory backend, whose counter writes wait until the test lets them through."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def stats_add(self, samples: Sequence[QueueStats], *, now: float | None = None) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().stats_add(samples, now=now)


def record(queue: str) -> JobRecord:
    return active_record(id=uuid.uuid4().hex, queue=queue, started_at=None, lease_token=None)


async def test_a_write_in_flight_when_shutdown_cancels_the_loop_is_neither_lost_nor_doubled() -> (
    None
):
    driver = GatedDriver(f"memory://{uuid.uuid4().hex}")
    engine = Engine(driver)
    stopping = asyncio.Event()
    counter = ThroughputCounter(engine, FakeClock(NOW), stopping)
    counter.job_finished(record("mail"), TransitionKind.COMPLETE, 0.1)
    counter.job_finished(record("mail"), TransitionKind.COMPLETE, 0.1)
    loop_task = asyncio.create_task(counter.run())
    await asyncio.sleep(0)  # the loop waits for the next flush or the stop
    stopping.set()  # the loop wakes and flushes what it has
    await asyncio.wait_for(driver.entered.wait(), 5)
    loop_task.cancel()  # as the supervisor stops every loop at shutdown
    await asyncio.gather(loop_task, return_exceptions=True)
    counter.job_finished(record("mail"), TransitionKind.FAIL, 0.1)  # a last completion
    last_flush = asyncio.create_task(counter.flush())  # as the worker does on its way out
    await asyncio.sleep(0)
    assert not last_flush.done()  # it waits for the write in flight
    driver.gate.set()
    await asyncio.wait_for(last_flush, 5)
    minute = int(NOW // 60)
    stats = await engine.stats_read(["mail"], since_minute=minute - 1)
    assert [(s.completed, s.retried, s.failed) for s in stats] == [(2, 0, 1)]
