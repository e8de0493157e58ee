"""Batches finished attempts into one fenced ``job_finish_many`` call.

Submissions made while a batch is in flight form the next batch, so an idle worker completes a
job in one round trip with no added delay, and a busy one amortizes a round trip over many jobs.

What a failed write leads to depends on why it failed:

* the backend is unavailable (:class:`BackendUnavailable`): the batch is retried with a capped
  backoff, never dropped; the jobs stay leased meanwhile and the lease keeper keeps them so;
* anything else (the backend refused the batch: a script error, an integrity violation, a value
  it cannot store): the batch is written item by item, so one bad item cannot hold back the
  others; an item the backend still refuses is replaced by a plain ``fail`` of its job naming
  why its outcome could not be written; if even that is refused, the item is given up and its
  lease left to expire (``on_result`` receives ``None``), so the job is rescued rather than
  held forever.

The backlog is bounded by back-pressure: :meth:`wait_for_room` is what the fetcher awaits before
it leases more work, so outcomes that cannot be written stop the worker from taking new jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from conveyor._errors import BackendUnavailable
from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.clock import Clock
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import FinishJob, Retention, TransitionKind, TransitionResult

log = logging.getLogger("conveyor.worker")

OnResult = Callable[[FinishJob, TransitionResult | None], None]
"""Called with the finish and its result once written; ``None`` if it was given up."""

BeforeWrite = Callable[[Sequence[str]], Awaitable[None]]
"""Awaited with the ids of a batch's jobs before the batch is written (e.g. to write their last
progress while they are still active); must not raise."""


@dataclass(slots=True)
class _Pending:
    finish: FinishJob
    on_result: OnResult
    done: bool = False


class Completer:
    def __init__(
        self,
        driver: Driver,
        *,
        retention: Retention,
        clock: Clock,
        max_batch: int = 500,
        max_backlog: int = 1000,
        retry_cap: float = 5.0,
        before_write: BeforeWrite | None = None,
    ) -> None:
        self._driver = driver
        self._retention = retention
        self._clock = clock
        self._max_batch = max_batch
        self._max_backlog = max_backlog
        self._retry_cap = retry_cap
        self._before_write = before_write
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._in_flight = 0

    def submit(self, finish: FinishJob, on_result: OnResult) -> None:
        """Queue ``finish`` for writing. Never blocks and never raises: the bound on the backlog
        is applied where new work is taken (:meth:`wait_for_room`)."""
        self._pending.append(_Pending(finish, on_result))
        self._idle.clear()
        self._wake.set()
        self._update_room()

    @property
    def backlog(self) -> int:
        """Transitions submitted but not yet written."""
        return len(self._pending) + self._in_flight

    @property
    def has_room(self) -> bool:
        return self.backlog < self._max_backlog

    def _update_room(self) -> None:
        if self.backlog < self._max_backlog:
            self._room.set()
        else:
            self._room.clear()

    async def wait_for_room(self) -> None:
        """Return once the backlog is below its bound."""
        while not self.has_room:
            self._room.clear()
            await self._room.wait()

    async def wait_until_written(self) -> None:
        """Return once everything submitted so far has been written (or given up)."""
        while self.backlog:
            await self._idle.wait()
            if self.backlog:  # set a moment before new work arrived: never spin on it
                await asyncio.sleep(0.01)

    async def run(self) -> None:
        """Flush until :meth:`close` is called and everything submitted has been written.

        If this task fails or is cancelled part way through a batch, what was not written yet
        goes back to the front of the backlog, so a restarted ``run`` writes it."""
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
            self._in_flight = len(batch)
            try:
                await self._write(batch)
            except BaseException:
                self._pending[:0] = [p for p in batch if not p.done]
                raise
            finally:
                self._in_flight = 0
                self._update_room()
            stop_if_cancelled()

    async def _write(self, batch: list[_Pending]) -> None:
        if self._before_write is not None:
            await self._before_write([p.finish.job_id for p in batch])
        refused = await self._write_until_available(batch)
        if refused is None:
            return
        if len(batch) > 1:
            log.warning(
                "the backend refused a batch of %d job outcome(s); writing them one by one: %s",
                len(batch),
                refused,
            )
        for pending in batch:
            if pending.done:
                continue
            refused = await self._write_until_available([pending])
            if refused is not None:
                await self._write_fallback(pending, refused)
            self._in_flight -= 1

    async def _write_fallback(self, pending: _Pending, refused: Exception) -> None:
        """Fail the job with the reason its outcome could not be written; give it up if even
        that is refused."""
        original = pending.finish
        error = (
            f"OutcomeNotWritten: the {original.kind.value} of this attempt could not be written "
            f"({refused}); the job was failed instead"
        )
        fallback = FinishJob(
            original.job_id, original.token, TransitionKind.FAIL, error=error, queue=original.queue
        )
        log.error(
            "writing the outcome of job %s failed: %s; failing the job instead",
            original.job_id,
            refused,
            extra={"event": "failed", "job_id": original.job_id},
        )
        attempt = _Pending(fallback, lambda _finish, result: pending.on_result(original, result))
        again = await self._write_until_available([attempt])
        if again is None:
            pending.done = True
            return
        log.error(
            "job %s: even its failure could not be written (%s); leaving its lease to expire so "
            "that it is rescued",
            original.job_id,
            again,
            extra={"event": "lease_lost", "job_id": original.job_id},
        )
        pending.done = True
        _deliver(pending.on_result, original, None)

    async def _write_until_available(self, batch: list[_Pending]) -> Exception | None:
        """Write ``batch``, retrying while the backend is unavailable; the error the backend
        refused it with, or None once written."""
        delay = 0.05
        while True:
            try:
                results = await self._driver.job_finish_many(
                    [p.finish for p in batch], retention=self._retention, now=self._clock.now()
                )
            except BackendUnavailable as exc:
                log.warning(
                    "writing the outcome of %d job(s) failed, will retry in %.1fs: %s",
                    len(batch),
                    delay,
                    exc,
                )
            except Exception as exc:
                return exc
            else:
                for pending, result in zip(batch, results, strict=True):
                    pending.done = True
                    _deliver(pending.on_result, pending.finish, result)
                return None
            stop_if_cancelled()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_cap)

    async def close(self) -> None:
        """Stop once every submitted transition is written."""
        self._closing = True
        self._wake.set()
        await self._idle.wait()


def _deliver(on_result: OnResult, finish: FinishJob, result: TransitionResult | None) -> None:
    try:
        on_result(finish, result)
    except Exception:  # a callback's bug must not stop the writing of other outcomes
        log.exception("handling the written outcome of job %s failed", finish.job_id)
