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
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel

from conveyor import _eventloop
from conveyor._config import WorkerConfig
from conveyor._context import JobContext, JobLogger, epoch_to_datetime
from conveyor._definition import JobDef
from conveyor._errors import ConveyorError
from conveyor._queue import Queue
from conveyor.core.backoff import DEFAULT_BACKOFF
from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.outcome import Outcome, Transition, decide
from conveyor.drivers.records import (
    ExtendResult,
    FetchParams,
    FinishJob,
    JobRecord,
    JobState,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
    WorkerInfo,
)
from conveyor.engine import Engine
from conveyor.runtime.completer import Completer
from conveyor.runtime.executor import StopReason, execute
from conveyor.runtime.lease_keeper import LeaseKeeper
from conveyor.runtime.lifecycle import WorkerStats, finish_for, log_job, log_transition
from conveyor.runtime.maintenance import Heartbeat, Maintenance
from conveyor.runtime.registry import Handler, HandlerRegistry

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")

log = logging.getLogger("conveyor.worker")

# After the grace period, how long interrupted jobs get to unwind, and how long the last
# completions get to be written, before the worker exits anyway (their leases then expire and
# other workers rescue the jobs: nothing is lost, some work may run again).
UNWIND_SECONDS = 5.0
# How long a free slot may wait for others to free up, so that they are filled by one fetch.
PREFETCH_WAIT = 0.005


@dataclass(eq=False)
class _Running:
    record: JobRecord
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None


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
        self._grace: float | None = None  # set by stop(grace=...)
        # Set when a slot frees up or the worker is asked to stop: what a full fetcher waits for.
        self._slot_freed: asyncio.Event | None = None
        self._idle = False  # the last fetch found nothing: the next one waits for work
        self._job_loggers: dict[str, logging.Logger] = {}
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
        """Run until SIGTERM/SIGINT (or drained, with ``burst``); for scripts and the CLI. Runs
        on uvloop when it is installed (see :mod:`conveyor._eventloop`)."""
        _eventloop.run(self.run(install_signal_handlers=True))

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
        await self._report_setup(driver)
        completer = Completer(driver, retention=cfg.retention, clock=cfg.clock)
        keeper = LeaseKeeper(
            driver.connect_another(),
            lease_seconds=cfg.lease_seconds,
            interval=cfg.renew_interval,
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
            extra={"event": "started", "worker_id": self.id, "queue": ",".join(self.queues)},
        )
        try:
            await self._fetch_loop()
        finally:
            await self._shutdown(completer, keeper, maintenance, background)
            if install_signal_handlers:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _report_setup(self, driver: Engine) -> None:
        """Warn about a backend configured to lose jobs; never keep the worker from starting."""
        try:
            warnings = await driver.setup_warnings()
        except Exception as exc:  # the backend may not be up yet: the fetch loop will wait
            log.debug("could not check the backend's configuration: %s", exc)
            return
        for warning in warnings:
            log.warning("%s", warning, extra={"event": "setup", "worker_id": self.id})

    def stop(self, *, grace: float | None = None) -> None:
        """Stop fetching and let running jobs finish within the grace period (the config's,
        or ``grace`` seconds if given), then hand the rest back. A second call, or
        ``grace=0``, hands them back at once. Call it from the worker's event loop."""
        if grace is not None:
            self._grace = grace if self._grace is None else min(self._grace, grace)
        if self._stopping is None or self._grace_cut is None:
            # run() has not started yet (e.g. its task is created but not scheduled): remember
            # the request, or the worker would run forever.
            stopped, cut = self._early_stop
            self._early_stop = (True, cut or stopped or grace == 0)
            return
        if self._stopping.is_set() or grace == 0:
            self._grace_cut.set()
        self._stopping.set()
        if self._slot_freed is not None:
            self._slot_freed.set()
        for queue in self.queues:  # ends a fetch waiting for work (in this process or not)
            self.queue.driver.notify(queue)

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
        failures = 0
        while not self._stopping.is_set():
            stop_if_cancelled()
            try:
                drained = await self._fetch_once()
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
            if drained:
                log.info("queues drained, burst worker exiting", extra={"event": "drained"})
                return

    async def _fetch_once(self) -> bool:
        """Claim what there is room for, or wait for room or work; true once a burst worker has
        nothing left to do."""
        assert self._stopping is not None and self._slot_freed is not None
        cfg = self.config
        driver = self.queue.driver
        await self._wait_for_room()
        free = cfg.concurrency - len(self._running)
        if free <= 0 or self._stopping.is_set():
            return False
        params = FetchParams(self.queues, free, self.id, cfg.lease_seconds)
        # After an empty fetch, wait for work (a backend may fetch in the same round trip as the
        # wait ends). Never cancelled, which could lose what it leased: stop() wakes it instead.
        wait = cfg.poll_interval if self._idle else 0.0
        records = await driver.job_fetch(params, now=cfg.clock.now(), wait=wait)
        if records and self._stopping.is_set():
            self._hand_back(records)
            return False
        for record in records:
            self._start(record)
        if records:
            self._idle = False
            await asyncio.sleep(0)  # let the jobs begin before the next fetch's round trip
            return False
        if cfg.burst and not self._running and await self._drained():
            return True
        self._idle = True
        return False

    async def _wait_for_room(self) -> None:
        """Wait until a fetch is worth its round trip: a quarter of the slots free (or any slot
        once one has waited ``PREFETCH_WAIT``, or when nothing runs). A busy worker so fetches
        jobs in batches instead of one per finished job."""
        assert self._stopping is not None and self._slot_freed is not None
        concurrency = self.config.concurrency
        enough = max(1, concurrency // 4)
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            free = concurrency - len(self._running)
            if free >= enough or not self._running:
                return
            self._slot_freed.clear()
            if free <= 0:
                await self._slot_freed.wait()
                continue
            if deadline is None:
                deadline = loop.time() + PREFETCH_WAIT
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slot_freed.wait()
            except TimeoutError:
                return

    async def _drained(self) -> bool:
        """Nothing runnable or running in the served queues that are not paused. Retries of
        work already started count (they are part of draining); jobs scheduled for later do
        not, so a burst worker never waits for tomorrow's job."""
        assert self._completer is not None
        if self._completer.backlog:
            return False
        busy = (JobState.QUEUED, JobState.ACTIVE, JobState.RETRYING)
        # One call: queue_list carries both the paused flags and the counts by state.
        return not any(
            info.counts.get(state, 0)
            for info in await self.queue.driver.queue_list()
            if info.name in self.queues and not info.paused
            for state in busy
        )

    def _job_logger(self, name: str) -> logging.Logger:
        logger = self._job_loggers.get(name)
        if logger is None:  # getLogger takes a global lock: once per job name, not per job
            logger = self._job_loggers[name] = logging.getLogger(f"conveyor.job.{name}")
        return logger

    def _hand_back(self, records: list[JobRecord]) -> None:
        """Give back jobs fetched as the worker began to stop: queued again, attempt unused."""
        assert self._completer is not None
        for record in records:
            assert record.lease_token is not None
            finish = FinishJob(
                record.id, record.lease_token, TransitionKind.REQUEUE, queue=record.queue
            )
            self._completer.submit(finish, lambda finish, result: None)

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
            logger=JobLogger(
                self._job_logger(record.name),
                {
                    "job_id": record.id,
                    "job_name": record.name,
                    "queue": record.queue,
                    "attempt": record.attempt,
                },
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
        self._lease_keeper.hold(record.id, record.lease_token, record.queue)
        entry.task = asyncio.create_task(self._process(entry), name=f"conveyor-job-{record.id}")

    async def _process(self, entry: _Running) -> None:
        record = entry.record
        log_job(logging.INFO, "job processing", "processing", record)
        started = time.monotonic()
        try:
            outcome = await execute(
                record,
                self.registry,
                entry.ctx,
                lambda: entry.stop_reason,
                max_result_bytes=self.queue.max_payload_bytes,
            )
        except BaseException:
            # Only an outside cancellation of the worker itself gets here. Stop renewing: the
            # lease expires and the job is rescued, as after a crash.
            self._forget(record.id, record.lease_token)
            raise
        finally:
            if self._running.get(record.id) is entry:  # not a newer attempt of the same job
                del self._running[record.id]
            assert self._slot_freed is not None
            self._slot_freed.set()
        duration = time.monotonic() - started
        if entry.stop_reason == StopReason.LEASE_LOST:
            self._forget(record.id, record.lease_token)
            self.stats.lease_lost += 1
            log_job(
                logging.WARNING,
                "job lease lost; another worker may run it again",
                "lease_lost",
                record,
                duration=duration,
            )
            return
        transition = self._decide(record, outcome)
        log_transition(record, transition, duration)
        assert self._completer is not None
        self._completer.submit(finish_for(record, transition), self._on_written)

    def _decide(self, record: JobRecord, outcome: Outcome) -> Transition:
        registered = self.registry.get(record.name)
        backoff = registered.definition.backoff if registered else DEFAULT_BACKOFF
        clock_now = self.config.clock.now()
        now = time.time() if clock_now is None else clock_now
        attempt, most = record.attempt, record.max_attempts
        try:
            return decide(
                outcome, attempt=attempt, max_attempts=most, backoff=backoff, now=now, rng=self._rng
            )
        except Exception:  # a user-supplied Backoff that raises must not strand the job
            log.exception("backoff of job %s failed; using the default backoff", record.name)
            return decide(
                outcome,
                attempt=attempt,
                max_attempts=most,
                backoff=DEFAULT_BACKOFF,
                now=now,
                rng=self._rng,
            )

    def _on_written(self, finish: FinishJob, result: TransitionResult) -> None:
        self._forget(finish.job_id, finish.token)
        if result.status is TransitionStatus.OK:
            self.stats.count(finish.kind)
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

    def _interrupt(self, job_id: str, reason: StopReason, *, token: str | None = None) -> None:
        entry = self._running.get(job_id)
        if entry is None or entry.task is None:
            return
        if token is not None and entry.record.lease_token != token:
            return
        if entry.stop_reason is not None:
            # Already stopping (a cancelled sync job waits for its thread). A lost lease or
            # shutdown still cuts that wait short; a lost lease also means nothing is written.
            # A cancel cut short by shutdown becomes a hand-back, which the driver records as a
            # cancellation because the cancel request is still on the job.
            if reason == StopReason.LEASE_LOST:
                entry.stop_reason = reason
            if reason in (StopReason.LEASE_LOST, StopReason.SHUTDOWN):
                entry.task.cancel()
            return
        entry.stop_reason = reason
        entry.ctx.cancelled.set()
        entry.task.cancel()

    async def _shutdown(
        self,
        completer: Completer,
        keeper: LeaseKeeper,
        maintenance: Maintenance,
        background: list[asyncio.Task[None]],
    ) -> None:
        assert self._grace_cut is not None
        grace = self.config.shutdown_grace if self._grace is None else self._grace
        tasks = [e.task for e in self._running.values() if e.task is not None]
        if tasks and grace > 0:
            log.info(
                "waiting up to %.1fs for %d running job(s)",
                grace,
                len(tasks),
                extra={"event": "shutdown", "worker_id": self.id},
            )
            await _first(asyncio.wait(tasks, timeout=grace), self._grace_cut.wait())
        for entry in list(self._running.values()):
            self._interrupt(entry.record.id, StopReason.SHUTDOWN)
        leftovers = [e.task for e in self._running.values() if e.task is not None]
        leftovers.extend(self._superseded)
        if leftovers:
            _, stuck = await asyncio.wait(leftovers, timeout=UNWIND_SECONDS)
            if stuck:
                log.error(
                    "%d job(s) ignored cancellation; leaving them to lease expiry and rescue",
                    len(stuck),
                    extra={"event": "shutdown", "worker_id": self.id},
                )
        # Hand-backs must be written even after a second signal; only a dead backend stops it.
        flushed = asyncio.ensure_future(completer.close())
        await asyncio.wait([flushed], timeout=UNWIND_SECONDS)
        if not flushed.done():
            log.error(
                "could not write %d job outcome(s) before exiting; their leases will expire and "
                "other workers will run them again",
                completer.backlog,
                extra={"event": "shutdown", "worker_id": self.id},
            )
            flushed.cancel()
        await asyncio.to_thread(keeper.stop)
        for task in background:
            task.cancel()
        await asyncio.gather(flushed, *background, return_exceptions=True)
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
