"""Batches finished attempts into one fenced ``job_finish_many`` call.

Submissions made while a batch is in flight form the next batch, so an idle worker completes a
job in one round trip with no added delay, and a busy one amortizes a round trip over many jobs.
A batch that fails for infrastructure reasons is retried with backoff, never dropped: the jobs
stay leased meanwhile, and the lease keeper keeps them so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from conveyor._errors import ConveyorError
from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.clock import Clock
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import FinishJob, Retention, TransitionResult

log = logging.getLogger("conveyor.worker")

OnResult = Callable[[FinishJob, TransitionResult], None]


@dataclass(slots=True)
class _Pending:
    finish: FinishJob
    on_result: OnResult


class Completer:
    def __init__(
        self,
        driver: Driver,
        *,
        retention: Retention,
        clock: Clock,
        max_batch: int = 500,
        retry_cap: float = 5.0,
    ) -> None:
        self._driver = driver
        self._retention = retention
        self._clock = clock
        self._max_batch = max_batch
        self._retry_cap = retry_cap
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._in_flight = 0

    def submit(self, finish: FinishJob, on_result: OnResult) -> None:
        self._pending.append(_Pending(finish, on_result))
        self._idle.clear()
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Transitions submitted but not yet written."""
        return len(self._pending) + self._in_flight

    async def run(self) -> None:
        """Flush until :meth:`close` is called and everything submitted has been written."""
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = (
                self._pending[: self._max_batch],
                self._pending[self._max_batch :],
            )
            await self._write(batch)
            stop_if_cancelled()

    async def _write(self, batch: list[_Pending]) -> None:
        self._in_flight = len(batch)
        try:
            if await self._try_write(batch):
                return
            # One bad item must not hold back the rest: write them one at a time.
            for pending in batch:
                await self._write_until_done([pending])
                self._in_flight -= 1
        finally:
            self._in_flight = 0

    async def _write_until_done(self, batch: list[_Pending]) -> None:
        delay = 0.05
        while not await self._try_write(batch):
            stop_if_cancelled()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_cap)

    async def _try_write(self, batch: list[_Pending]) -> bool:
        try:
            results = await self._driver.job_finish_many(
                [p.finish for p in batch], retention=self._retention, now=self._clock.now()
            )
        except Exception as exc:  # never drop a transition: the jobs stay leased meanwhile
            log.warning(
                "writing the outcome of %d job(s) failed, will retry: %s",
                len(batch),
                exc,
                exc_info=not isinstance(exc, ConveyorError),
            )
            return False
        for pending, result in zip(batch, results, strict=True):
            pending.on_result(pending.finish, result)
        return True

    async def close(self) -> None:
        """Stop once every submitted transition is written."""
        self._closing = True
        self._wake.set()
        await self._idle.wait()
