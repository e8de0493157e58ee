"""The relay: moves the committed rows of an outbox to Redis, then deletes them.

Each batch: read the oldest committed rows (at most ``batch_size``; on PostgreSQL locked with
``FOR UPDATE SKIP LOCKED``, so relays can run side by side), insert them into the target with
``job_insert_many`` under their own job ids and with the headers they were written with (the
payload's secret fields, a producer's trace context), then delete them (one transaction with
the read on PostgreSQL). A relay killed at any point loses nothing, and creates no second job:
the rows it had not deleted are moved again, and the target reports each job it already has as
a duplicate and writes nothing. That holds while the target still has the job, i.e. as long as its
retention keeps finished jobs longer than a relay takes to be restarted (the default keeps the
last 1,000 completed jobs of each queue).

A row the target refuses as invalid (``InvalidArgument``, or a script that rejected its input)
is set aside, not retried: its ``failed_at`` and ``error`` columns are set, an error line is
logged, and the relay skips it from then on. Fix the cause, then ``UPDATE conveyor_outbox SET
failed_at = NULL`` to move it again, or delete it. Every other failure (Redis or the database
unreachable, Redis out of memory...) is retried with a growing pause (0.1 s doubling up to
10 s), for as long as it lasts, never in a tight loop.

Between batches the relay waits: on PostgreSQL for the ``NOTIFY`` each committing producer
sends (and at most ``safety_poll`` seconds), on SQLite for a poll interval that starts at 10 ms
after rows were found and doubles up to ``max_poll`` while none are. A full batch is followed by
the next one at once.

Logs (logger ``conveyor.relay``): one ``relayed`` line per batch with ``moved`` (new jobs),
``duplicates``, ``set_aside`` and ``lag_ms`` (the age of the oldest row of the batch, from its
insert to its move); ``relay_error`` lines for failures; totals in :attr:`Relay.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from conveyor import _eventloop
from conveyor._errors import BackendError, BackendUnavailable, InvalidArgument
from conveyor.backends.registry import driver_for_url
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import InsertStatus, NewJob
from conveyor.engine import Engine
from conveyor.outbox._outbox import Outbox, PostgresOutbox, SQLiteOutbox, check_job, outbox_for_url
from conveyor.outbox._sources import OutboxRow, Source, Status, Taken, source_for

if TYPE_CHECKING:
    from conveyor._queue import Queue

log = logging.getLogger("conveyor.relay")

BATCH_SIZE: Final = 500
SAFETY_POLL: Final = 5.0
MIN_POLL: Final = 0.01
MAX_POLL: Final = 1.0
FIRST_BACKOFF: Final = 0.1
MAX_BACKOFF: Final = 10.0
# What a Redis script says when it rejects its input (see lua/includes/args.lua).
_SCRIPT_REFUSAL: Final = "conveyor job_insert_many:"


@dataclass
class RelayStats:
    """Totals since the relay was made."""

    batches: int = 0
    moved: int = 0  # jobs the target did not have, now inserted
    duplicates: int = 0  # rows whose job the target already had (a replay, or a reused id)
    set_aside: int = 0
    errors: int = 0  # failed attempts at a batch (each one retried after a pause)
    last_lag_ms: float | None = None
    max_lag_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class BatchReport:
    rows: int = 0
    moved: int = 0
    duplicates: int = 0
    set_aside: int = 0
    lag_ms: float | None = None
    duration: float = 0.0
    refused: dict[int, str] = field(default_factory=dict[int, str])


class _Refused(Exception):
    """The target refused a job as invalid: retrying cannot help."""


class Relay:
    """Move jobs from ``source`` (an outbox URL or :class:`Outbox`) to ``target`` (a Redis URL,
    a :class:`Queue`, or an open driver), batch after batch, until stopped; see the module for
    the guarantees. A URL's connection is the relay's own and closes with it; a queue's or a
    driver's is shared and left open."""

    def __init__(
        self,
        source: str | Outbox,
        target: str | Queue | Driver,
        *,
        batch_size: int = BATCH_SIZE,
        safety_poll: float = SAFETY_POLL,
        max_poll: float = MAX_POLL,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise InvalidArgument(f"batch_size must be from 1 to 10000, got {batch_size}")
        outbox = outbox_for_url(source) if isinstance(source, str) else source
        if not isinstance(outbox, PostgresOutbox | SQLiteOutbox):
            raise InvalidArgument(f"not an outbox: {outbox!r}")
        self.outbox: Outbox = outbox
        self._source: Source = source_for(outbox)
        from conveyor._queue import Queue  # here: the queue module may import this one

        self._owns_target = isinstance(target, str)
        self._queue = target if isinstance(target, Queue) else None
        if isinstance(target, str):
            target = driver_for_url(target)
        elif isinstance(target, Queue):
            target = target.driver
        self.target = target if isinstance(target, Engine) else Engine(target)
        self.batch_size = batch_size
        self.safety_poll = safety_poll
        self.max_poll = max_poll
        self.stats = RelayStats()
        self._stop = asyncio.Event()
        self._target_open = False

    def __repr__(self) -> str:
        return f"Relay({self.outbox.url!r} -> {self.target.url!r})"

    # -- running -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand, then return from :meth:`run`."""
        self._stop.set()

    def run_sync(self) -> None:
        """Run until SIGTERM/SIGINT (for scripts and the CLI)."""
        _eventloop.run(self.run(install_signal_handlers=True))

    async def run(
        self, stop: asyncio.Event | None = None, *, install_signal_handlers: bool = False
    ) -> None:
        """Move batches until :meth:`stop` is called or ``stop`` is set; the batch in hand is
        always finished (moved and deleted, or given back untouched)."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        stops = [self._stop] if stop is None else [self._stop, stop]
        try:
            await self._loop(stops)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.close()
            log.info("relay stopped", extra={"event": "relay_stopped"})

    def _on_signal(self, sig: signal.Signals) -> None:
        log.warning(
            "%s received: finishing the batch in hand, then exiting",
            sig.name,
            extra={"event": "shutdown"},
        )
        self.stop()

    async def _loop(self, stops: list[asyncio.Event]) -> None:
        poll = MIN_POLL
        failures = 0
        started = False
        while not any(s.is_set() for s in stops):
            try:
                if not started:
                    await self._source.open()  # the outbox table exists from here on
                    started = True
                    log.info(
                        "relay started: %s -> %s",
                        self.outbox.url,
                        self.target.url,
                        extra={"event": "relay_started"},
                    )
                report = await self.run_once()
                failures = 0
                if report.rows >= self.batch_size:
                    await asyncio.sleep(0)  # let the rest of the process run between batches
                    continue
                if report.rows:
                    poll = MIN_POLL
                if isinstance(self.outbox, PostgresOutbox):
                    await self._wait(stops, self._source.wait(self.safety_poll))
                else:
                    await self._wait(stops, asyncio.sleep(poll))
                    poll = MIN_POLL if report.rows else min(poll * 2, self.max_poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.stats.errors += 1
                pause = min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF)
                pause *= random.uniform(0.75, 1.0)
                log.log(
                    logging.WARNING if failures < 5 else logging.ERROR,
                    "relay failed (%s); trying again in %.1fs",
                    exc,
                    pause,
                    exc_info=exc if not isinstance(exc, BackendUnavailable) else None,
                    extra={"event": "relay_error", "error": str(exc)},
                )
                with contextlib.suppress(Exception):
                    await self._source.release()
                await self._wait(stops, asyncio.sleep(pause))

    @staticmethod
    async def _wait(stops: list[asyncio.Event], waiting: Awaitable[object]) -> None:
        """Await ``waiting`` unless a stop comes first; its error is raised."""
        task = asyncio.ensure_future(waiting)
        stoppers = [asyncio.ensure_future(s.wait()) for s in stops]
        try:
            await asyncio.wait([task, *stoppers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, *stoppers):
                if not t.done():
                    t.cancel()
            await asyncio.gather(task, *stoppers, return_exceptions=True)
        if task.done() and not task.cancelled():
            task.result()

    async def close(self) -> None:
        await self._source.close()
        if self._owns_target and self._target_open:
            self._target_open = False
            with contextlib.suppress(Exception):
                await self.target.close()

    # -- one batch -----------------------------------------------------------------------------

    async def run_once(self) -> BatchReport:
        """Move one batch (at most ``batch_size`` rows); what :meth:`run` repeats."""
        if not self._target_open:
            if self._queue is not None:
                await self._queue.connect()
            elif self._owns_target:
                await self.target.open()
            self._target_open = True
        started = time.perf_counter()
        taken = await self._source.take(self.batch_size)
        if not taken.rows:
            return BatchReport()
        try:
            moved, duplicates, refused = await self._insert(taken)
            done = [row.seq for row in taken.rows if row.seq not in refused]
            await self._source.finish(done, refused)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._source.release()
            raise
        lag = max(0.0, taken.now - min(row.created_at for row in taken.rows)) * 1000
        report = BatchReport(
            rows=len(taken.rows),
            moved=moved,
            duplicates=duplicates,
            set_aside=len(refused),
            lag_ms=round(lag, 1),
            duration=time.perf_counter() - started,
            refused=refused,
        )
        self._count(report, taken.rows)
        return report

    async def _insert(self, taken: Taken) -> tuple[int, int, dict[int, str]]:
        """Insert the batch's jobs into the target; returns (inserted, duplicates, refused
        rows' errors by seq)."""
        refused: dict[int, str] = {}
        ready: list[tuple[OutboxRow, NewJob]] = []
        for row in taken.rows:
            job = row.job(taken.now)
            try:
                check_job(job)
            except InvalidArgument as exc:
                refused[row.seq] = str(exc)
                continue
            ready.append((row, job))
        try:
            statuses = await self._write([job for _, job in ready])
        except _Refused:
            # Find the rows it refused, one at a time; the others go in (or are duplicates).
            statuses = list[InsertStatus]()
            for row, job in ready:
                try:
                    statuses += await self._write([job])
                except _Refused as exc:
                    refused[row.seq] = str(exc.__cause__ or exc)
        moved = sum(1 for s in statuses if s is InsertStatus.INSERTED)
        return moved, len(statuses) - moved, refused

    async def _write(self, jobs: Sequence[NewJob]) -> list[InsertStatus]:
        if not jobs:
            return []
        try:
            results = await self.target.job_insert_many(jobs)
        except InvalidArgument as exc:
            raise _Refused(str(exc)) from exc
        except BackendError as exc:
            if _SCRIPT_REFUSAL in str(exc):
                raise _Refused(str(exc)) from exc
            raise
        return [r.status for r in results]

    def _count(self, report: BatchReport, rows: Sequence[OutboxRow]) -> None:
        s = self.stats
        s.batches += 1
        s.moved += report.moved
        s.duplicates += report.duplicates
        s.set_aside += report.set_aside
        s.last_lag_ms = report.lag_ms
        s.max_lag_ms = max(s.max_lag_ms, report.lag_ms or 0.0)
        by_seq = {row.seq: row for row in rows}
        for seq, error in report.refused.items():
            row = by_seq[seq]
            log.error(
                "outbox row %d set aside: the target refused job %r: %s",
                seq,
                row.id,
                error,
                extra={
                    "event": "relay_set_aside",
                    "job_id": row.id,
                    "job_name": row.name,
                    "queue": row.queue,
                    "error": error,
                },
            )
        log.info(
            "relayed %d job(s)",
            report.moved,
            extra={
                "event": "relayed",
                "moved": report.moved,
                "duplicates": report.duplicates,
                "set_aside": report.set_aside,
                "lag_ms": report.lag_ms,
                "duration": report.duration,
            },
        )

    async def status(self) -> Status:
        """Rows waiting, rows set aside, and the age of the oldest waiting row."""
        return await self._source.status()
