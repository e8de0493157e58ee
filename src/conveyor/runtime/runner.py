"""The jobs a worker runs: one task per job, and exactly one write per attempt.

Every path from "the handler returned or raised" to "a transition was submitted" is one guarded
step (:meth:`Runner._finish`): whatever deciding the transition does with a user's values
(a backoff that returns NaN, an error message that cannot be encoded), it ends with a transition
submitted to the completer, a ``fail`` naming what went wrong at worst. Should even that be
impossible, the job's lease is released to expire, so the job is rescued rather than held for as
long as the worker lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from conveyor._config import WorkerConfig
from conveyor._context import JobContext, JobLogger, epoch_to_datetime, new_context
from conveyor._hooks import Hooks
from conveyor._middleware import Middleware
from conveyor.core.backoff import DEFAULT_BACKOFF
from conveyor.core.outcome import (
    Outcome,
    PauseGroup,
    PauseQueue,
    SnoozeFor,
    Unhandled,
    decide,
)
from conveyor.core.serialization import writable_text
from conveyor.drivers.protocol import Capability, Driver
from conveyor.drivers.records import (
    ExtendResult,
    FinishJob,
    JobRecord,
    Lease,
    RescueJob,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
    WorkerInfo,
)
from conveyor.runtime.ahead import LeasedAhead
from conveyor.runtime.completer import Completer
from conveyor.runtime.executor import StopReason, execute
from conveyor.runtime.lease_keeper import Keeper
from conveyor.runtime.lifecycle import WorkerStats, finish_for, log_job, log_transition
from conveyor.runtime.observers import Observers
from conveyor.runtime.prefetch import Prefetch, prefetch_for
from conveyor.runtime.progress import ProgressBatcher
from conveyor.runtime.registry import HandlerRegistry

log = logging.getLogger("conveyor.worker")
_job_log = logging.getLogger("conveyor.job")
# A job leased ahead whose lease was found lost before a slot freed for it.
_LOST_AHEAD = "job lease lost while it waited for a slot; it was not started"


@dataclass(eq=False)
class _Running:
    record: JobRecord
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None


class Runner:
    def __init__(
        self,
        *,
        driver: Driver,
        registry: HandlerRegistry,
        completer: Completer,
        config: WorkerConfig,
        worker_id: str,
        max_result_bytes: int,
        stats: WorkerStats,
        slot_freed: asyncio.Event,
        progress: ProgressBatcher | None = None,
        middleware: Sequence[Middleware] = (),
        observers: Observers | None = None,
        hooks: Hooks | None = None,
        prefetch: Prefetch | None = None,
    ) -> None:
        self._driver = driver
        self._progress = progress
        self._registry = registry
        self._completer = completer
        self._config = config
        self._worker_id = worker_id
        self._max_result_bytes = max_result_bytes
        self._stats = stats
        self._slot_freed = slot_freed
        self.keeper: Keeper | None = None
        self._middleware = tuple(middleware)
        # Not `observers or ...`: an empty Observers is falsy, and the worker adds its own
        # (the throughput counter) to the very object it passed after this is built.
        self._observers = observers if observers is not None else Observers()
        self._hooks = hooks or Hooks()
        self._definitions = {d.name: d for d in registry.definitions()}
        self._filtered = Capability.FETCH_BY_NAME in driver.capabilities
        self.running: dict[str, _Running] = {}
        # Jobs leased ahead (see runtime/prefetch.py): held, each started as a slot frees,
        # handed back when the worker stops or when one waited too long (runtime/ahead.py).
        self.ahead = LeasedAhead()
        self._ahead_open = True  # false once stopping: nothing more is leased ahead
        self._patience: asyncio.TimerHandle | None = None  # looks for jobs that waited too long
        self.prefetch = prefetch or prefetch_for(
            config, driver.capabilities, registry.definitions()
        )
        self.superseded: set[asyncio.Task[None]] = set()  # stale attempts still unwinding
        # Jobs whose handler is done but whose outcome is still being decided (a rate-limited
        # job first pauses its queue, a round trip): shutdown waits for them too, never
        # interrupts them, so their outcome reaches the completer before it closes.
        self.finishing: set[asyncio.Task[None]] = set()
        # queue -> the job names other live workers of it serve, from the last heartbeat.
        self.known_elsewhere: dict[str, frozenset[str]] = {}
        self._rng = random.Random()
        # One logger per job name the worker serves; jobs of other names share one (a logger
        # per name seen would grow without bound: loggers are never freed).
        self._loggers = {
            name: logging.getLogger(f"conveyor.job.{name}") for name in registry.names()
        }

    def count(self) -> int:
        """Jobs running now."""
        return len(self.running)

    def taken(self) -> int:
        """Jobs this worker has taken on: running, or leased ahead and waiting for a slot."""
        return len(self.running) + len(self.ahead)

    def capacity(self) -> int:
        """How many jobs the worker may take on now: its slots, and what it may lease ahead."""
        return self._config.concurrency + self.prefetch.limit

    # -- leases --------------------------------------------------------------------------------

    def hold(self, record: JobRecord) -> None:
        """Keep ``record``'s lease renewed. If an earlier attempt of the same job still runs
        here, its lease was lost (it expired and the job was rescued) without the lease keeper
        noticing yet: that attempt is stopped now."""
        assert self.keeper is not None and record.lease_token is not None
        previous = self.running.get(record.id)
        if (
            previous is not None
            and previous.task is not None
            and previous.record.lease_token != record.lease_token
        ):
            self.interrupt(record.id, StopReason.LEASE_LOST)
            self.superseded.add(previous.task)
            previous.task.add_done_callback(self.superseded.discard)
        if record.id in self.ahead:
            # The same: an earlier attempt that waited ahead lost its lease. It never starts.
            for stale in self.ahead.remove(record.id, other_than=record.lease_token):
                self._lost(stale, _LOST_AHEAD)
        self.keeper.hold(record.id, record.lease_token, record.queue)

    def batch(self) -> AbstractContextManager[None]:
        """Holds made inside reach the lease keeper together (see ``Keeper.batch``)."""
        return contextlib.nullcontext() if self.keeper is None else self.keeper.batch()

    def _lost(self, record: JobRecord, message: str, duration: float | None = None) -> None:
        """Stop renewing a lease found lost, count it and say so (nothing is written)."""
        self.forget(record.id, record.lease_token)
        self._stats.lease_lost += 1
        extra = {} if duration is None else {"duration": duration}
        log_job(logging.WARNING, message, "lease_lost", record, **extra)

    def forget(self, job_id: str, token: str | None) -> None:
        if self.keeper is not None:
            self.keeper.release(job_id, token)

    async def isolate(self, record: JobRecord) -> bool:
        """Record in the backend that ``record``'s attempt now runs alone; false if its lease
        was lost meanwhile (it must not run then)."""
        assert record.lease_token is not None
        lease = Lease(record.id, record.lease_token, record.queue, isolated=True)
        try:
            result = await self._driver.job_extend_leases(
                [lease], self._config.lease_seconds, now=self._config.clock.now()
            )
        except Exception as exc:
            log.warning("could not mark job %s to run alone, handing it back: %s", record.id, exc)
            self.hand_back([record], "it could not be marked to run alone")
            return False
        if record.id in result.lost:
            self.forget(record.id, record.lease_token)
            return False
        if record.id in result.cancel_requested:
            # Cancelled while it waited to run alone: the hand-back is recorded as the cancel.
            self.hand_back([record], "it was cancelled while it waited to run alone")
            return False
        return True

    def on_workers(self, workers: Sequence[WorkerInfo]) -> None:
        """Note which names other live workers serve, queue by queue (from a heartbeat)."""
        known: dict[str, set[str]] = {}
        for worker in workers:
            if worker.id == self._worker_id:
                continue
            for queue in worker.queues:
                known.setdefault(queue, set()).update(worker.names)
        self.known_elsewhere = {queue: frozenset(names) for queue, names in known.items()}

    def on_extended(self, result: ExtendResult, sent: Mapping[str, str]) -> None:
        # ``sent`` holds the tokens the keeper extended: a loss reported for an older token must
        # not stop a newer attempt of the same job that started since.
        for job_id in result.lost:
            self.interrupt(job_id, StopReason.LEASE_LOST, token=sent.get(job_id))
        for job_id in result.cancel_requested:
            self.interrupt(job_id, StopReason.CANCELLED, token=sent.get(job_id))

    # -- running -------------------------------------------------------------------------------

    def hand_back(self, records: Sequence[JobRecord], reason: str) -> None:
        """Requeue leased jobs this worker will not run, without spending their attempt."""
        for record in records:
            assert record.lease_token is not None
            log_job(logging.INFO, f"job handed back: {reason}", "requeued", record)
            finish = FinishJob(
                record.id, record.lease_token, TransitionKind.REQUEUE, queue=record.queue
            )
            self._submit(record, finish, 0.0)

    def offer(self, record: JobRecord) -> None:
        """Start ``record`` if a slot is free, else keep it (its lease renewed) for the next
        slot that frees."""
        if len(self.running) < self._config.concurrency:
            self.start(record)
            return
        if not self._ahead_open:
            self.hand_back([record], "the worker is stopping")
            return
        self.hold(record)
        self.ahead.add(record)
        self._watch_ahead()

    def hand_back_ahead(self, reason: str) -> None:
        """Hand back the jobs leased ahead, and start none from now on (the worker stops)."""
        self._ahead_open = False
        if self._patience is not None:
            self._patience.cancel()
            self._patience = None
        if self.ahead:
            self.hand_back(self.ahead.take_all(), reason)

    def _start_next(self) -> None:
        """A slot freed: start the next job leased ahead, if any (already held). A loop: a job
        that cannot be started (failed at once) leaves its slot to the next one."""
        while self.ahead and len(self.running) < self._config.concurrency:
            self._launch(self.ahead.pop())

    def _watch_ahead(self) -> None:
        """Look again when the oldest job leased ahead will have waited too long."""
        due = self.ahead.next_overdue()
        if self._patience is None and due is not None:
            delay = max(due - time.monotonic(), 0.0)
            self._patience = asyncio.get_running_loop().call_later(delay, self._give_up_ahead)

    def _give_up_ahead(self) -> None:
        """The running jobs stopped freeing slots (stuck or slow): hand back the jobs that
        waited too long, for other workers, and lease nothing ahead until a job finishes."""
        self._patience = None
        overdue = self.ahead.overdue(time.monotonic())
        if overdue:
            self.prefetch.hold_off()
            log.warning(
                "%d job(s) leased ahead waited %gs for a slot (the running jobs are slow or "
                "stuck): handed back for other workers",
                len(overdue),
                self.ahead.patience,
                extra={"event": "requeued", "worker_id": self._worker_id},
            )
            self.hand_back(overdue, "it waited too long for a slot")
        self._watch_ahead()

    def start(self, record: JobRecord) -> None:
        self.hold(record)
        self._launch(record)

    def _launch(self, record: JobRecord) -> None:
        """Run a held job in a task of its own."""
        assert record.lease_token is not None
        self._stats.fetched += 1
        try:
            ctx = self._context(record)
        except Exception as exc:  # a value in this record we cannot represent: fail only it
            log.exception("job %s could not be started", record.id)
            error = writable_text(f"ConveyorError: the job could not be started: {exc!r}")
            finish = FinishJob(
                record.id, record.lease_token, TransitionKind.FAIL, error=error, queue=record.queue
            )
            self._submit(record, finish, 0.0)
            return
        if self._observers:
            now = self._config.clock.now()
            self._observers.job_started(record, time.time() if now is None else now)
        entry = _Running(record, ctx)
        self.running[record.id] = entry
        # Unnamed: naming a task costs more than the rest of creating it.
        entry.task = asyncio.create_task(self._process(entry))

    def _context(self, record: JobRecord) -> JobContext:
        return new_context(
            record.id,
            record.name,
            record.queue,
            record.attempt,
            record.max_attempts,
            epoch_to_datetime(record.enqueued_at),
            self._worker_id,
            JobLogger(
                self._loggers.get(record.name, _job_log),
                {
                    "job_id": record.id,
                    "job_name": record.name,
                    "queue": record.queue,
                    "attempt": record.attempt,
                },
            ),
            None
            if self._progress is None or record.lease_token is None
            else functools.partial(
                self._progress.report, record.id, record.lease_token, record.queue
            ),
        )

    async def _process(self, entry: _Running) -> None:
        """The last line of defence around a job's attempt: one that died of a bug releases
        its lease (the job is rescued) instead of leaving it renewed for as long as the worker
        lives. Only this attempt's lease: a newer attempt of the same job may hold the job by
        now. (Caught here rather than in a done callback: that was one more loop callback per
        job.)"""
        try:
            await self._attempt(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("the task of job %s failed", entry.record.id, exc_info=exc)
            self.forget(entry.record.id, entry.record.lease_token)
        except BaseException:
            log.error("the task of job %s failed", entry.record.id, exc_info=True)
            self.forget(entry.record.id, entry.record.lease_token)
            raise

    async def _attempt(self, entry: _Running) -> None:
        record = entry.record
        log_job(logging.INFO, "job processing", "processing", record)
        started = time.monotonic()
        try:
            outcome = await execute(
                record,
                self._registry,
                entry.ctx,
                lambda: entry.stop_reason,
                max_result_bytes=self._max_result_bytes,
                middleware=self._middleware,
            )
        except BaseException:
            # Only an outside cancellation of the worker itself gets here. Stop renewing: the
            # lease expires and the job is rescued, as after a crash.
            self.forget(record.id, record.lease_token)
            raise
        finally:
            if self.running.get(record.id) is entry:  # not a newer attempt of the same job
                del self.running[record.id]
                self._start_next()
            self._slot_freed.set()
        duration = time.monotonic() - started
        self.prefetch.observe(duration)
        if entry.stop_reason == StopReason.LEASE_LOST:
            self._lost(record, "job lease lost; another worker may run it again", duration)
            self._observers.job_finished(record, None, duration)
            return
        task = entry.task  # this very task (start() set it before the task first ran)
        if task is not None:
            self.finishing.add(task)
        try:
            await self._finish(record, outcome, duration)
        finally:
            if task is not None:
                self.finishing.discard(task)

    async def _pause(self, record: JobRecord, transition: PauseQueue | PauseGroup) -> bool:
        """Block the job's queue or group before the job is put back, so no worker can start
        it (or another job held by the same limit) in between; false if that failed (the job
        then waits alone, without spending its attempt)."""
        now = self._config.clock.now()
        group = record.group if isinstance(transition, PauseGroup) else None
        what = f"queue {record.queue!r}" if group is None else f"group {group!r}"
        try:
            if group is not None:
                await self._driver.group_block(record.queue, group, transition.delay, now=now)
            else:
                await self._driver.rate_limit_block(record.queue, transition.delay, now=now)
        except Exception as exc:
            log.warning(
                "could not pause %s for %gs after job %s was rate limited (the job waits that "
                "long on its own): %s",
                what,
                transition.delay,
                record.id,
                exc,
            )
            return False
        return True

    async def _finish(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        """Decide the transition and submit it: always one write, whatever the values do."""
        assert record.lease_token is not None
        try:
            registered = self._registry.get(record.name)
            backoff = registered.definition.backoff if registered else DEFAULT_BACKOFF
            # The limit is kept on the definition's queue: a job enqueued elsewhere has none.
            limited = (
                registered is not None
                and registered.definition.rate_limit is not None
                and registered.definition.queue == record.queue
            )
            if isinstance(outcome, Unhandled):
                elsewhere = record.name in self.known_elsewhere.get(record.queue, ())
                outcome = Unhandled(outcome.known, self._filtered, elsewhere)
            transition = decide(
                outcome, record, backoff=backoff, rng=self._rng, rate_limited=limited
            )
            finish = finish_for(record, transition)
            if isinstance(transition, PauseQueue | PauseGroup) and not await self._pause(
                record, transition
            ):
                # Without the pause the job would be started again at once, and meet the
                # upstream's limit again: it waits out ``retry_after`` on its own instead.
                transition = SnoozeFor(transition.delay)
                finish = finish_for(record, transition)
        except Exception as exc:  # a bug of ours: still end the attempt, visibly
            log.exception("deciding the outcome of job %s failed", record.id)
            error = writable_text(f"ConveyorError: deciding the outcome failed: {exc!r}")
            finish = FinishJob(
                record.id, record.lease_token, TransitionKind.FAIL, error=error, queue=record.queue
            )
        else:
            try:
                log_transition(record, transition, duration)
            except Exception:  # a logging handler's failure must not lose the outcome
                pass
        self._submit(record, finish, duration)

    def on_rescued(self, record: JobRecord, rescue: RescueJob) -> None:
        """The maintenance leader rescued ``record`` (its worker lost it): observers learn of
        the transition, and a job that failed for good after stalling calls the hooks, as a
        handler's failure would."""
        self._observers.job_finished(record, rescue.kind, 0.0)
        if self._hooks:
            self._hooks.finished(
                record,
                rescue.kind,
                error=rescue.error,
                delay=0.0,
                duration=0.0,
                definitions=self._definitions,
            )

    def _submit(self, record: JobRecord, finish: FinishJob, duration: float) -> None:
        self._completer.submit(finish, functools.partial(self._on_written, record, duration))

    def _on_written(
        self,
        record: JobRecord,
        duration: float,
        finish: FinishJob,
        result: TransitionResult | None,
    ) -> None:
        self.forget(finish.job_id, finish.token)
        written = result is not None and result.status is TransitionStatus.OK
        self._observers.job_finished(record, finish.kind if written else None, duration)
        if written:
            self._stats.count(finish.kind)
            if self._hooks:
                self._hooks.finished(
                    record,
                    finish.kind,
                    error=finish.error,
                    delay=finish.delay,
                    duration=duration,
                    definitions=self._definitions,
                )
            return
        self._stats.lease_lost += 1
        if result is None:
            return  # the completer gave it up and said why
        log.warning(
            "job outcome discarded: %s (another worker owns the job now)",
            result.status.value,
            extra={"event": "lease_lost", "job_id": finish.job_id, "outcome": finish.kind},
        )

    # -- stopping ------------------------------------------------------------------------------

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop the jobs someone cancelled (told at once by a backend that notifies)."""
        for job_id in job_ids:
            self.interrupt(job_id, StopReason.CANCELLED)

    def interrupt(self, job_id: str, reason: StopReason, *, token: str | None = None) -> None:
        if job_id in self.ahead and (token is not None or reason == StopReason.CANCELLED):
            # An attempt leased ahead (that very token; or, for a cancel, any attempt of the
            # job: it may be a newer one, while the older still unwinds in its slot).
            self._drop_ahead(job_id, reason, token)
        entry = self.running.get(job_id)
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

    def _drop_ahead(self, job_id: str, reason: StopReason, token: str | None) -> None:
        """A job leased ahead lost its lease (it must not start, nor be written) or was stopped
        otherwise before it started: handed back (a cancel's hand-back is recorded by the
        backend as the cancel)."""
        for record in self.ahead.remove(job_id, token=token):
            if reason == StopReason.LEASE_LOST:
                self._lost(record, _LOST_AHEAD)
            else:
                self.hand_back([record], f"it was stopped ({reason.value}) before it started")

    def tasks(self) -> list[asyncio.Task[None]]:
        """The job tasks shutdown waits for: those running a handler, and those writing an
        outcome that needs a round trip first."""
        running = [e.task for e in self.running.values() if e.task is not None]
        return [*running, *(t for t in self.finishing if t not in running)]

    def interrupt_all(self) -> None:
        for entry in list(self.running.values()):
            self.interrupt(entry.record.id, StopReason.SHUTDOWN)
