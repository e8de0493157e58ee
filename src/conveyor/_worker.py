"""``Worker``: runs handlers for jobs of one backend.

One asyncio process: a fetcher that claims ``concurrency - running`` jobs per round trip, one
task per job (see ``runtime.executor``), a completer that batches transitions, a lease keeper
thread, leader-gated maintenance and a heartbeat. Shutdown hands unfinished jobs back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel

from conveyor._context import JobContext, epoch_to_datetime
from conveyor._definition import JobDef
from conveyor._errors import ConveyorError
from conveyor._queue import Queue
from conveyor.core.backoff import DEFAULT_BACKOFF
from conveyor.core.clock import BackendClock, Clock
from conveyor.core.outcome import (
    Cancel,
    Complete,
    Fail,
    Requeue,
    RetryAt,
    SnoozeUntil,
    Transition,
    decide,
)
from conveyor.drivers.records import (
    ExtendResult,
    FetchParams,
    FinishJob,
    JobRecord,
    JobState,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
    WorkerInfo,
)
from conveyor.runtime.completer import Completer
from conveyor.runtime.executor import StopReason, execute
from conveyor.runtime.lease_keeper import LeaseKeeper
from conveyor.runtime.maintenance import Heartbeat, Maintenance
from conveyor.runtime.registry import Handler, HandlerRegistry

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")

log = logging.getLogger("conveyor.worker")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker runs. Defaults follow common practice; the CLI maps its flags onto these."""

    concurrency: int = 5
    queues: tuple[str, ...] = ()  # empty: every queue the worker's definitions use
    lease_seconds: float = 30.0
    lease_renew_interval: float | None = None  # default: a third of the lease
    shutdown_grace: float = 25.0
    max_stalls: int = 2
    retention: Retention = field(default_factory=Retention)
    poll_interval: float = 1.0  # longest idle wait before fetching again
    maintenance_interval: float = 5.0
    heartbeat_interval: float = 10.0
    burst: bool = False  # exit once the served queues have nothing waiting or running
    clock: Clock = field(default_factory=BackendClock)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {self.lease_seconds}")
        renew = self.lease_renew_interval
        if renew is not None and renew <= 0:
            raise ValueError(f"lease_renew_interval must be > 0, got {renew}")
        if renew is not None and renew >= self.lease_seconds:
            log.warning(
                "lease_renew_interval (%gs) is not shorter than lease_seconds (%gs): leases will "
                "lapse while jobs run and other workers may run them again",
                renew,
                self.lease_seconds,
            )
        if self.shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0, got {self.shutdown_grace}")


@dataclass(eq=False)
class _Running:
    record: JobRecord
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None


@dataclass
class WorkerStats:
    fetched: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    snoozed: int = 0
    cancelled: int = 0
    requeued: int = 0
    lease_lost: int = 0


class Worker:
    """Serve job definitions with handlers: ``@worker.handles(defn)`` then ``await worker.run()``.

    ``jobs`` names the definitions this worker must serve (a module or an iterable); the worker
    refuses to start while one of them has no handler.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        concurrency: int | None = None,
        queues: Iterable[str] | None = None,
        jobs: Iterable[JobDef[Any, Any]] | ModuleType | None = None,
        config: WorkerConfig | None = None,
    ) -> None:
        base = config or WorkerConfig()
        overrides: dict[str, Any] = {}
        if concurrency is not None:
            overrides["concurrency"] = concurrency
        if queues is not None:
            overrides["queues"] = tuple(queues)
        self.config = dataclasses.replace(base, **overrides) if overrides else base
        self.queue = queue
        self.registry = HandlerRegistry()
        if jobs is not None:
            self.registry.declare(jobs)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = WorkerStats()
        self._running: dict[str, _Running] = {}
        self._superseded: set[asyncio.Task[None]] = set()  # stale attempts still unwinding
        self._rng = random.Random()
        self._stopping: asyncio.Event | None = None
        self._grace_cut: asyncio.Event | None = None
        self._early_stop: tuple[bool, bool] = (False, False)  # stop() before run(): (stop, cut)
        self._slot_freed: asyncio.Event | None = None
        self._started_at = 0.0
        self._completer: Completer | None = None
        self._lease_keeper: LeaseKeeper | None = None

    # -- registration --------------------------------------------------------------------------

    def handles(self, definition: JobDef[P, R]) -> Callable[[Handler[P, R]], Handler[P, R]]:
        """Register the decorated function (async or sync) as the handler of ``definition``."""

        def register(handler: Handler[P, R]) -> Handler[P, R]:
            self.registry.add(definition, handler)
            return handler

        return register

    def register(self, definition: JobDef[P, R], handler: Handler[P, R]) -> None:
        self.registry.add(definition, handler)

    def check(self) -> None:
        """Raise :class:`MissingHandlers` if a declared definition has no handler."""
        self.registry.check()

    @property
    def queues(self) -> tuple[str, ...]:
        return self.config.queues or self.registry.queues() or ("default",)

    # -- running -------------------------------------------------------------------------------

    def run_sync(self) -> None:
        """Run until SIGTERM/SIGINT (or drained, with ``burst``); for scripts and the CLI."""
        asyncio.run(self.run(install_signal_handlers=True))

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        self.check()
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._grace_cut = asyncio.Event()
        stop_early, cut_early = self._early_stop
        self._early_stop = (False, False)
        if stop_early:
            self._stopping.set()
        if cut_early:
            self._grace_cut.set()
        self._slot_freed = asyncio.Event()
        self._started_at = time.time()
        driver = await self.queue.connect()
        completer = Completer(driver, retention=cfg.retention, clock=cfg.clock)
        keeper = LeaseKeeper(
            driver.connect_another(),
            lease_seconds=cfg.lease_seconds,
            interval=cfg.lease_renew_interval or cfg.lease_seconds / 3,
            clock=cfg.clock,
            loop=loop,
            on_extended=self._on_extended,
        )
        maintenance = Maintenance(
            driver,
            worker_id=self.id,
            clock=cfg.clock,
            interval=cfg.maintenance_interval,
            max_stalls=cfg.max_stalls,
            retention=cfg.retention,
        )
        heartbeat = Heartbeat(
            driver, info=self._info, clock=cfg.clock, interval=cfg.heartbeat_interval
        )
        self._completer, self._lease_keeper = completer, keeper
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        background = [
            asyncio.create_task(completer.run(), name="conveyor-completer"),
            asyncio.create_task(maintenance.run(), name="conveyor-maintenance"),
            asyncio.create_task(heartbeat.run(), name="conveyor-heartbeat"),
        ]
        keeper.start()
        log.info(
            "worker started",
            extra={
                "event": "started",
                "worker_id": self.id,
                "queue": ",".join(self.queues),
            },
        )
        try:
            await self._fetch_loop()
        finally:
            await self._shutdown(completer, keeper, maintenance, background)
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    def stop(self, *, grace: float | None = None) -> None:
        """Stop fetching and finish in-flight jobs within the grace period; ``grace=0`` (or a
        second call) hands them back at once."""
        if self._stopping is None or self._grace_cut is None:
            # run() has not started yet (e.g. its task is created but not scheduled): remember
            # the request, or the worker would run forever.
            stopped, cut = self._early_stop
            self._early_stop = (True, cut or stopped or grace == 0)
            return
        if self._stopping.is_set() or grace == 0:
            self._grace_cut.set()
        self._stopping.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        again = self._stopping is not None and self._stopping.is_set()
        log.warning(
            "%s received: %s",
            sig.name,
            "handing back running jobs now" if again else "finishing running jobs, then exiting",
            extra={"event": "shutdown", "worker_id": self.id},
        )
        self.stop()

    async def _fetch_loop(self) -> None:
        assert self._stopping is not None and self._slot_freed is not None
        cfg = self.config
        driver = self.queue.driver
        failures = 0
        while not self._stopping.is_set():
            free = cfg.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await _first(self._slot_freed.wait(), self._stopping.wait())
                continue
            try:
                params = FetchParams(self.queues, free, self.id, cfg.lease_seconds)
                records = await driver.job_fetch(params, now=cfg.clock.now())
                failures = 0
            except Exception as exc:  # a broken connection must not end the worker
                failures += 1
                pause = min(0.1 * 2**failures, 5.0)
                log.warning(
                    "fetching jobs failed, retrying in %.1fs: %s",
                    pause,
                    exc,
                    exc_info=not isinstance(exc, ConveyorError),
                )
                await _first(asyncio.sleep(pause), self._stopping.wait())
                continue
            for record in records:
                self._start(record)
            if records:
                continue
            if cfg.burst and not self._running and await self._drained():
                log.info("queues drained, burst worker exiting", extra={"event": "drained"})
                return
            await _first(driver.listen(self.queues, cfg.poll_interval), self._stopping.wait())

    async def _drained(self) -> bool:
        assert self._completer is not None
        if self._completer.backlog:
            return False
        busy = (JobState.QUEUED, JobState.ACTIVE, JobState.SCHEDULED, JobState.RETRYING)
        for name in self.queues:
            counts = await self.queue.driver.job_count_by_state(name)
            if any(counts.get(state, 0) for state in busy):
                return False
        return True

    def _start(self, record: JobRecord) -> None:
        assert self._lease_keeper is not None and record.lease_token is not None
        self.stats.fetched += 1
        ctx = JobContext(
            job_id=record.id,
            job_name=record.name,
            queue=record.queue,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            enqueued_at=epoch_to_datetime(record.enqueued_at),
            worker_id=self.id,
            logger=logging.LoggerAdapter(
                logging.getLogger(f"conveyor.job.{record.name}"),
                {"job_id": record.id, "job_name": record.name, "attempt": record.attempt},
            ),
        )
        previous = self._running.get(record.id)
        if previous is not None and previous.task is not None:
            # We were given the job again, so our earlier attempt's lease was lost (it expired and
            # the job was rescued) without the lease keeper noticing yet: stop that attempt.
            self._interrupt(record.id, StopReason.LEASE_LOST)
            self._superseded.add(previous.task)
            previous.task.add_done_callback(self._superseded.discard)
        entry = _Running(record, ctx)
        self._running[record.id] = entry
        self._lease_keeper.hold(record.id, record.lease_token)
        entry.task = asyncio.create_task(self._process(entry), name=f"conveyor-job-{record.id}")

    async def _process(self, entry: _Running) -> None:
        record = entry.record
        _log_job(logging.INFO, "job processing", "processing", record)
        started = time.monotonic()
        try:
            outcome = await execute(record, self.registry, entry.ctx, lambda: entry.stop_reason)
        finally:
            if self._running.get(record.id) is entry:  # not a newer attempt of the same job
                del self._running[record.id]
            assert self._slot_freed is not None
            self._slot_freed.set()
        duration = time.monotonic() - started
        if entry.stop_reason == StopReason.LEASE_LOST:
            self._forget(record.id, record.lease_token)
            self.stats.lease_lost += 1
            _log_job(
                logging.WARNING,
                "job lease lost; another worker may run it again",
                "lease_lost",
                record,
                duration=duration,
            )
            return
        registered = self.registry.get(record.name)
        backoff = registered.definition.backoff if registered else DEFAULT_BACKOFF
        now = self.config.clock.now()
        transition = decide(
            outcome,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            backoff=backoff,
            now=time.time() if now is None else now,
            rng=self._rng,
        )
        _log_transition(record, transition, duration)
        assert self._completer is not None
        self._completer.submit(_finish_for(record, transition), self._on_written)

    def _on_written(self, finish: FinishJob, result: TransitionResult) -> None:
        self._forget(finish.job_id, finish.token)
        if result.status is TransitionStatus.OK:
            self._count(finish.kind)
        else:
            self.stats.lease_lost += 1
            log.warning(
                "job outcome discarded: %s (another worker owns the job now)",
                result.status.value,
                extra={"event": "lease_lost", "job_id": finish.job_id, "outcome": finish.kind},
            )

    def _forget(self, job_id: str, token: str | None) -> None:
        if self._lease_keeper is not None:
            self._lease_keeper.release(job_id, token)

    def _on_extended(self, result: ExtendResult, sent: Mapping[str, str]) -> None:
        # ``sent`` holds the tokens the keeper extended: a loss reported for an older token must
        # not stop a newer attempt of the same job that started since.
        for job_id in result.lost:
            self._interrupt(job_id, StopReason.LEASE_LOST, token=sent.get(job_id))
        for job_id in result.cancel_requested:
            self._interrupt(job_id, StopReason.CANCELLED, token=sent.get(job_id))

    def _interrupt(self, job_id: str, reason: str, *, token: str | None = None) -> None:
        entry = self._running.get(job_id)
        if entry is None or entry.task is None or entry.stop_reason is not None:
            return
        if token is not None and entry.record.lease_token != token:
            return
        entry.stop_reason = reason
        entry.ctx.cancelled.set()
        entry.task.cancel()

    def _count(self, kind: TransitionKind) -> None:
        """Count a transition once it is written (a refused one counts as ``lease_lost``)."""
        s = self.stats
        match kind:
            case TransitionKind.COMPLETE:
                s.completed += 1
            case TransitionKind.RETRY:
                s.retried += 1
            case TransitionKind.FAIL:
                s.failed += 1
            case TransitionKind.SNOOZE:
                s.snoozed += 1
            case TransitionKind.CANCEL:
                s.cancelled += 1
            case TransitionKind.REQUEUE:
                s.requeued += 1

    async def _shutdown(
        self,
        completer: Completer,
        keeper: LeaseKeeper,
        maintenance: Maintenance,
        background: list[asyncio.Task[None]],
    ) -> None:
        assert self._grace_cut is not None
        tasks = [e.task for e in self._running.values() if e.task is not None]
        if tasks:
            log.info(
                "waiting up to %.1fs for %d running job(s)",
                self.config.shutdown_grace,
                len(tasks),
                extra={"event": "shutdown", "worker_id": self.id},
            )
            await _first(
                asyncio.wait(tasks, timeout=self.config.shutdown_grace), self._grace_cut.wait()
            )
        for entry in list(self._running.values()):
            self._interrupt(entry.record.id, StopReason.SHUTDOWN)
        leftovers = [e.task for e in self._running.values() if e.task is not None]
        leftovers.extend(self._superseded)
        if leftovers:
            await asyncio.gather(*leftovers, return_exceptions=True)
        await completer.close()
        keeper.stop()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await maintenance.release()
            await self.queue.driver.worker_deregister(self.id)
        log.info("worker stopped", extra={"event": "stopped", "worker_id": self.id})

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.config.concurrency,
            started_at=self._started_at,
            running=len(self._running),
            processed=self.stats.completed + self.stats.failed,
        )


async def _first(*awaitables: Awaitable[Any]) -> None:
    """Wait until any of ``awaitables`` finishes, then cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _finish_for(record: JobRecord, transition: Transition) -> FinishJob:
    assert record.lease_token is not None
    token = record.lease_token
    match transition:
        case Complete(result=result):
            return FinishJob(record.id, token, TransitionKind.COMPLETE, result=result)
        case RetryAt(run_at=run_at, error=error):
            return FinishJob(record.id, token, TransitionKind.RETRY, error=error, run_at=run_at)
        case SnoozeUntil(run_at=run_at):
            return FinishJob(record.id, token, TransitionKind.SNOOZE, run_at=run_at)
        case Fail(error=error):
            return FinishJob(record.id, token, TransitionKind.FAIL, error=error)
        case Cancel(error=error):
            return FinishJob(record.id, token, TransitionKind.CANCEL, error=error)
        case Requeue():
            return FinishJob(record.id, token, TransitionKind.REQUEUE)
    raise AssertionError(f"unknown transition {transition!r}")  # pragma: no cover


def _log_job(level: int, message: str, event: str, record: JobRecord, **extra: Any) -> None:
    if not log.isEnabledFor(level):
        return
    fields = {
        "event": event,
        "job_name": record.name,
        "job_id": record.id,
        "attempt": record.attempt,
        "max_attempts": record.max_attempts,
        "queue": record.queue,
    }
    fields.update(extra)
    log.log(level, message, extra=fields)


def _log_transition(record: JobRecord, transition: Transition, duration: float) -> None:
    match transition:
        case Complete():
            _log_job(logging.INFO, "job completed", "completed", record, duration=duration)
        case RetryAt(run_at=run_at, error=error):
            _log_job(
                logging.WARNING,
                "job retrying",
                "retrying",
                record,
                duration=duration,
                run_at=epoch_to_datetime(run_at).isoformat(),
                error=error,
            )
        case Fail(error=error):
            _log_job(logging.ERROR, "job failed", "failed", record, duration=duration, error=error)
        case SnoozeUntil(run_at=run_at):
            _log_job(
                logging.INFO,
                "job snoozed",
                "snoozed",
                record,
                duration=duration,
                run_at=epoch_to_datetime(run_at).isoformat(),
            )
        case Cancel():
            _log_job(logging.WARNING, "job cancelled", "cancelled", record, duration=duration)
        case Requeue():
            _log_job(
                logging.WARNING,
                "job handed back to the queue",
                "requeued",
                record,
                duration=duration,
            )
