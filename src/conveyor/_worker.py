"""``Worker``: runs handlers for jobs of one backend.

One asyncio process: a fetcher that claims ``concurrency - running`` jobs per round trip
(``runtime.fetcher``), one task per job with exactly one write per attempt (``runtime.runner``),
a completer that batches those writes (``runtime.completer``), a lease keeper (a process beside
the worker on shared stores, ``runtime.renewer``), leader-gated maintenance, a heartbeat, and,
where the backend can tell, a listener that stops cancelled jobs at once. The background loops
run under a supervisor: one that keeps failing stops the worker with an error. Shutdown hands
unfinished jobs back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel

from conveyor import _eventloop, tracing
from conveyor._config import WorkerConfig
from conveyor._definition import JobDef
from conveyor._errors import InvalidArgument, WorkerFailed
from conveyor._hooks import Hooks
from conveyor._middleware import Middleware
from conveyor._queue import Queue
from conveyor._worker_extensions import WorkerExtensions
from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.clock import BackendClock
from conveyor.core.schedule import CatchUp, Overlap, Timetable
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import RateLimit, WorkerInfo
from conveyor.engine import Engine
from conveyor.runtime.completer import Completer
from conveyor.runtime.fetcher import Fetcher, FetcherHooks
from conveyor.runtime.gc_tuning import worker_gc
from conveyor.runtime.lease_keeper import Keeper, LeaseKeeper
from conveyor.runtime.lifecycle import WorkerStats
from conveyor.runtime.maintenance import Heartbeat, Maintenance
from conveyor.runtime.observers import Observers
from conveyor.runtime.prefetch import prefetch_for
from conveyor.runtime.progress import ProgressBatcher
from conveyor.runtime.rates import describe, rate_limits
from conveyor.runtime.registry import Handler, HandlerRegistry
from conveyor.runtime.renewer import RenewalProcess
from conveyor.runtime.runner import Runner
from conveyor.runtime.scheduler import CatchUpName, OverlapName, Scheduled, Scheduler, declare
from conveyor.runtime.supervisor import Supervisor
from conveyor.runtime.throughput import ThroughputCounter
from conveyor.runtime.waiting import first_of

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")

log = logging.getLogger("conveyor.worker")

# After the grace period, how long interrupted jobs get to unwind, and how long the last
# completions get to be written, before the worker exits anyway (their leases then expire and
# other workers rescue the jobs: nothing is lost, some work may run again).
UNWIND_SECONDS = 5.0


class Worker(WorkerExtensions):
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
        self._stopping: asyncio.Event | None = None
        self._grace_cut: asyncio.Event | None = None
        self._early_stop: tuple[bool, bool] = (False, False)  # stop() before run(): (stop, cut)
        self._grace: float | None = None  # set by stop(grace=...)
        # Set when a slot frees up or the worker is asked to stop: what a full fetcher waits for.
        self._slot_freed: asyncio.Event | None = None
        self._started_at = 0.0
        self._runner: Runner | None = None
        self._failure: tuple[str, BaseException] | None = None
        self._beside: dict[str, Callable[[asyncio.Event], Awaitable[None]]] = {}
        self.schedules: dict[str, Scheduled] = {}  # by name: what cron() and every() declared
        self.scheduler: Scheduler | None = None  # while running with schedules
        self.middleware: list[Middleware] = []
        self.hooks = Hooks()
        self.observers = Observers()

    # -- registration --------------------------------------------------------------------------

    def handles(self, definition: JobDef[P, R]) -> Callable[[Handler[P, R]], Handler[P, R]]:
        """Register the decorated function (async or sync) as the handler of ``definition``."""

        def register(handler: Handler[P, R]) -> Handler[P, R]:
            self.registry.add(definition, handler)
            return handler

        return register

    def register(self, definition: JobDef[P, R], handler: Handler[P, R]) -> None:
        self.registry.add(definition, handler)

    def cron(
        self,
        expression: str,
        definition: JobDef[P, Any],
        payload: P,
        *,
        name: str | None = None,
        tz: str = "UTC",
        catch_up: CatchUpName | CatchUp = "skip",
        overlap: OverlapName | Overlap = "allow",
    ) -> Scheduled:
        """Enqueue ``definition`` with ``payload`` at each tick of the cron ``expression`` (5
        fields, or 6 with seconds first) in time zone ``tz`` (an IANA name), once per tick
        however many workers declare it. ``name`` (default: the job's name) identifies the
        schedule across deploys: its jobs have ids ``cron:<name>:<tick>``. ``catch_up``: after
        downtime, ``"skip"`` the missed ticks or run the ``"latest"`` one; ``overlap``:
        ``"skip"`` a tick while the previous tick's job is waiting or running, or ``"allow"``
        it. Everything is checked here: a bad expression, zone, name or payload raises
        :class:`InvalidArgument` (a payload :class:`PayloadValidationError`)."""
        return self._schedule(
            Timetable(expression, tz), definition, payload, name, catch_up, overlap
        )

    def every(
        self,
        interval: timedelta | float,
        definition: JobDef[P, Any],
        payload: P,
        *,
        name: str | None = None,
        catch_up: CatchUpName | CatchUp = "skip",
        overlap: OverlapName | Overlap = "allow",
    ) -> Scheduled:
        """Enqueue ``definition`` every ``interval`` (whole seconds, at least 1): ticks fall on
        multiples of it since the epoch (UTC), so every(timedelta(hours=1)) runs on the hour.
        Options as for :meth:`cron`."""
        timetable = Timetable.every(interval)
        return self._schedule(timetable, definition, payload, name, catch_up, overlap)

    def _schedule(
        self,
        timetable: Timetable,
        definition: JobDef[Any, Any],
        payload: BaseModel,
        name: str | None,
        catch_up: CatchUpName | CatchUp,
        overlap: OverlapName | Overlap,
    ) -> Scheduled:
        scheduled = declare(
            timetable,
            definition,
            payload,
            name=name,
            catch_up=catch_up,
            overlap=overlap,
            max_payload_bytes=self.queue.max_payload_bytes,
            taken=list(self.schedules),
        )
        self.schedules[scheduled.name] = scheduled
        return scheduled

    def _warn_unhandled_schedules(self) -> None:
        known = set(self.registry.names())
        for s in self.schedules.values():
            if s.definition.name not in known:
                log.warning(
                    "schedule %s enqueues job %s, which this worker has no handler for: "
                    "a worker that has one must serve queue %s",
                    s.name,
                    s.definition.name,
                    s.definition.queue,
                    extra={"event": "setup", "worker_id": self.id},
                )

    def run_beside(self, name: str, loop: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Run ``loop(stopping)`` while the worker runs (e.g. an outbox relay), under its
        supervisor: restarted when it raises, the worker stopped when it keeps raising. It must
        return soon after ``stopping`` is set; the worker waits for it before exiting."""
        self._beside[name] = loop

    def check(self) -> None:
        """Raise :class:`MissingHandlers` if a declared definition has no handler, and
        :class:`InvalidJobDefinition` if a rate-limited definition shares a served queue."""
        self.registry.check()
        self.rate_limits()

    def rate_limits(self) -> tuple[RateLimit, ...]:
        """The rate limits of the queues this worker serves (see :mod:`conveyor.runtime.rates`)."""
        return rate_limits(self.registry.definitions(), self.queues)

    @property
    def queues(self) -> tuple[str, ...]:
        return self.config.queues or self.registry.queues() or ("default",)

    def unused_queues(self) -> list[str]:
        """Queues this worker was told to serve that none of its definitions use (a typo of a
        queue name, usually: nothing would ever run there)."""
        used = set(self.registry.queues())
        return [q for q in self.config.queues if used and q not in used]

    # -- running -------------------------------------------------------------------------------

    def run_sync(self) -> None:
        """Run until SIGTERM/SIGINT (or drained, with ``burst``); for scripts and the CLI. Runs
        on uvloop when it is installed (see :mod:`conveyor._eventloop`)."""
        _eventloop.run(self.run(install_signal_handlers=True))

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Run until stopped (or drained, with ``burst``). Raises :class:`WorkerFailed` if a
        background loop kept failing and the worker had to stop."""
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
        self._failure = None
        for name in self.unused_queues():
            known = ", ".join(self.registry.queues())
            log.warning(
                "queue %r is served by this worker but none of its job definitions use it "
                "(they use: %s); is it misspelt?",
                name,
                known,
                extra={"event": "setup", "worker_id": self.id},
            )
        driver = await self.queue.connect()
        await self._prepare(driver)
        progress = ProgressBatcher(driver, clock=cfg.clock)
        prefetch = prefetch_for(cfg, driver.capabilities, self.registry.definitions())
        completer = Completer(
            driver,
            retention=cfg.retention,
            clock=cfg.clock,
            # Outcomes of several rounds of every job the worker may take on (its slots and
            # those leased ahead): a write in flight, the outcomes waiting for the next and the
            # round finishing now. With room for two only, a fetch waited for each write.
            max_backlog=max(4 * (cfg.concurrency + prefetch.most), 100),
            before_write=progress.flush_jobs,
        )
        runner = self._runner = Runner(
            driver=driver,
            registry=self.registry,
            completer=completer,
            config=cfg,
            worker_id=self.id,
            max_result_bytes=self.queue.max_payload_bytes,
            stats=self.stats,
            slot_freed=self._slot_freed,
            progress=progress,
            middleware=self._middleware(),
            observers=self.observers,
            hooks=self.hooks,
            prefetch=prefetch,
        )
        counter = ThroughputCounter(driver, cfg.clock, self._stopping)
        self.observers.add(counter)
        keeper = runner.keeper = self._keeper(driver, loop, runner)
        maintenance = Maintenance(
            driver,
            worker_id=self.id,
            clock=cfg.clock,
            interval=cfg.maintenance_every,
            max_stalls=cfg.max_stalls,
            retention=cfg.retention,
            on_rescued=runner.on_rescued,
        )
        heartbeat = Heartbeat(
            driver,
            info=self._info,
            clock=cfg.clock,
            interval=cfg.heartbeat_interval,
            on_workers=runner.on_workers,
        )
        fetcher = Fetcher(
            driver,
            cfg,
            worker_id=self.id,
            queues=self.queues,
            names=tuple(self.registry.names()),
            completer=completer,
            hooks=FetcherHooks(
                taken=runner.taken,
                hold=runner.hold,
                start=runner.start,
                offer=runner.offer,
                capacity=runner.capacity,
                hand_back=runner.hand_back,
                isolate=runner.isolate,
                batch=runner.batch,
            ),
            stopping=self._stopping,
            slot_freed=self._slot_freed,
            rate_limits=self.rate_limits(),
            grouped=any(d.group_key is not None for d in self.registry.definitions()),
        )
        supervisor = Supervisor(self._give_up)
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        # Objects made until now (the application, its models, the worker's own) stay alive
        # for the whole run: see runtime/gc_tuning.py for why they are frozen.
        with worker_gc(cfg.gc_threshold):
            try:
                await keeper.start()
                supervisor.start("completer", completer.run)
                supervisor.start("progress", progress.run)
                supervisor.start("maintenance", maintenance.run)
                supervisor.start("heartbeat", heartbeat.run)
                supervisor.start("throughput", counter.run)
                if driver.has(Capability.CANCEL_NOTIFY):
                    supervisor.start("cancel listener", lambda: self._listen_for_cancels(driver))
                if self.schedules:
                    self._warn_unhandled_schedules()
                    scheduler = self.scheduler = Scheduler(
                        driver,
                        list(self.schedules.values()),
                        clock=cfg.clock,
                        nap=cfg.poll_interval,
                    )
                    supervisor.start("scheduler", scheduler.run)
                for name, beside in self._beside.items():
                    supervisor.start(name, functools.partial(beside, self._stopping))
                limits = self.rate_limits()
                log.info(
                    "worker started%s",
                    f"; rate limits: {describe(limits)}" if limits else "",
                    extra={
                        "event": "started",
                        "worker_id": self.id,
                        "queue": ",".join(self.queues),
                    },
                )
                await fetcher.run()
            finally:
                try:
                    await self._shutdown(completer, keeper, maintenance, supervisor)
                finally:
                    self.observers.observers.remove(counter)
                with contextlib.suppress(Exception):  # counts written by the last completions
                    async with asyncio.timeout(UNWIND_SECONDS):
                        await counter.flush()
                if install_signal_handlers:
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        loop.remove_signal_handler(sig)
        failure = self.failure
        if failure is not None:
            name, exc = failure
            raise WorkerFailed(f"the worker's {name} loop kept failing: {exc}") from exc

    def _middleware(self) -> list[Middleware]:
        """The registered middleware, inside the tracing one when the worker traces (outermost,
        so the span covers them and what they raise is recorded on it)."""
        traced = tracing.worker_middleware(self.config.tracing)
        return self.middleware if traced is None else [traced, *self.middleware]

    def _keeper(self, driver: Engine, loop: asyncio.AbstractEventLoop, runner: Runner) -> Keeper:
        cfg = self.config
        can_use_process = driver.has(Capability.SHARED_ACROSS_PROCESSES) and isinstance(
            cfg.clock, BackendClock
        )
        if cfg.lease_keeper == "process" and not can_use_process:
            raise InvalidArgument(
                "lease_keeper='process' needs a store other processes can reach (SQLite, "
                "Redis, ...) and the backend's clock; this worker has "
                f"{type(driver.driver).__name__} with {type(cfg.clock).__name__}: use 'auto'"
            )
        use_process = cfg.lease_keeper == "process" or (
            cfg.lease_keeper == "auto" and can_use_process
        )
        if use_process:
            return RenewalProcess(
                driver.source_url,
                lease_seconds=cfg.lease_seconds,
                interval=cfg.renew_interval,
                loop=loop,
                on_extended=runner.on_extended,
                on_failure=self._give_up,
                on_renewal=self.observers.lease_renewal,
            )
        return LeaseKeeper(
            driver.connect_another(),
            lease_seconds=cfg.lease_seconds,
            interval=cfg.renew_interval,
            clock=cfg.clock,
            loop=loop,
            on_extended=runner.on_extended,
            on_renewal=self.observers.lease_renewal,
        )

    async def _prepare(self, driver: Engine) -> None:
        """Warn about a backend configured to lose jobs, and publish which queue serves which
        job name (for ``enqueue_by_name``); never keep the worker from starting."""
        try:
            warnings = await driver.setup_warnings()
            for warning in warnings:
                log.warning("%s", warning, extra={"event": "setup", "worker_id": self.id})
            routes = {d.name: d.queue for d in self.registry.definitions()}
            if routes:
                await driver.route_register(routes)
        except Exception as exc:  # the backend may not be up yet: the fetch loop will wait
            log.debug("could not prepare the backend: %s", exc)

    async def _listen_for_cancels(self, driver: Engine) -> None:
        assert self._stopping is not None and self._runner is not None
        while not self._stopping.is_set():
            try:
                cancelled = await driver.cancel_listen(self.id, self.config.poll_interval)
            except Exception as exc:  # lease renewals still deliver cancels meanwhile
                log.debug("listening for cancels failed: %s", exc)
                await asyncio.sleep(self.config.poll_interval)
                continue
            stop_if_cancelled()
            self._runner.cancel(cancelled)

    @property
    def failure(self) -> tuple[str, BaseException] | None:
        """The background loop that stopped the worker, and why (None while all is well)."""
        return self._failure

    def _give_up(self, name: str, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = (name, exc)
        # Without renewals the running jobs' leases run out during a grace period, and another
        # worker may start them meanwhile: hand them back at once instead.
        self.stop(grace=0 if name == "lease renewal" else None)

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
        if self._runner is not None:
            self._runner.hand_back_ahead("the worker is stopping")
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

    async def _shutdown(
        self,
        completer: Completer,
        keeper: Keeper,
        maintenance: Maintenance,
        supervisor: Supervisor,
    ) -> None:
        assert self._grace_cut is not None and self._runner is not None
        runner = self._runner
        runner.hand_back_ahead("the worker is stopping")  # a burst exit has none; a failure may
        grace = self.config.shutdown_grace if self._grace is None else self._grace
        tasks = runner.tasks()
        if tasks and grace > 0:
            log.info(
                "waiting up to %.1fs for %d running job(s)",
                grace,
                len(tasks),
                extra={"event": "shutdown", "worker_id": self.id},
            )
            await first_of(asyncio.wait(tasks, timeout=grace), self._grace_cut.wait())
        runner.interrupt_all()
        leftovers = [*runner.tasks(), *runner.superseded]
        if leftovers:
            _, stuck = await asyncio.wait(leftovers, timeout=UNWIND_SECONDS)
            if stuck:
                log.error(
                    "%d job(s) ignored cancellation; leaving them to lease expiry and rescue",
                    len(stuck),
                    extra={"event": "shutdown", "worker_id": self.id},
                )
        # Hand-backs must be written even after a second signal; only a dead backend (or a
        # completer that was given up) stops it.
        flushed = asyncio.ensure_future(completer.close())
        gave_up = self._failure is not None and self._failure[0] == "completer"
        await asyncio.wait([flushed], timeout=0 if gave_up else UNWIND_SECONDS)
        if not flushed.done():
            log.error(
                "could not write %d job outcome(s) before exiting; their leases will expire "
                "and other workers will run them again",
                completer.backlog,
                extra={"event": "shutdown", "worker_id": self.id},
            )
            flushed.cancel()
        await asyncio.gather(flushed, return_exceptions=True)
        await asyncio.to_thread(keeper.stop)
        await self.hooks.drain(UNWIND_SECONDS)
        await self._stop_beside(supervisor)
        await supervisor.stop()
        with contextlib.suppress(Exception):
            await maintenance.release()
            await self.queue.driver.worker_deregister(self.id)
        log.info("worker stopped", extra={"event": "stopped", "worker_id": self.id})

    async def _stop_beside(self, supervisor: Supervisor) -> None:
        """Let the loops run beside the worker finish what they hold (bounded)."""
        assert self._stopping is not None
        self._stopping.set()  # also when a burst worker ran out of work
        tasks: list[asyncio.Task[None]] = []
        for name in self._beside:
            with contextlib.suppress(KeyError):  # never started: run() failed before
                tasks.append(supervisor.task(name))
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=UNWIND_SECONDS)
            for task in stuck:
                log.error(
                    "%s did not stop within %gs; cancelling it",
                    task.get_name(),
                    UNWIND_SECONDS,
                    extra={"event": "shutdown", "worker_id": self.id},
                )

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.config.concurrency,
            started_at=self._started_at,
            running=self._runner.count() if self._runner else 0,
            processed=self.stats.completed + self.stats.failed,
            names=tuple(self.registry.names()),
        )
