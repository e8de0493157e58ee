"""The engine: the one caller of drivers.

Queue and Worker talk to storage only through an :class:`Engine`, which wraps one driver and
adds what every backend needs the same way:

* every failure becomes the public error tree, naming the operation: the backend's
  infrastructure errors :class:`BackendUnavailable` (worth retrying), anything else the backend
  raised (a script that refused its input, an integrity violation, unreadable data)
  :class:`BackendError`; Conveyor's own errors (``InvalidArgument``...) pass through;
* every operation emits one :class:`OperationEvent` (its contract name, duration and outcome)
  to the engine's subscribers, which is where logs, metrics and tracing attach;
* a caller can require a capability, with a clear error instead of a silent misbehaviour.

It fulfils the driver protocol itself, so the runtime is written against ``Driver`` alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from conveyor._errors import BackendError, BackendUnavailable, ConveyorError
from conveyor.drivers.blocking import BlockingInserter, HasBlockingInserter
from conveyor.drivers.protocol import Capability, Driver
from conveyor.drivers.records import (
    ChangeResult,
    CronFire,
    CronFireResult,
    CronInfo,
    CronSchedule,
    ExtendResult,
    FetchParams,
    FinishJob,
    InsertResult,
    JobRecord,
    JobState,
    Lease,
    ListParams,
    NewJob,
    ProgressUpdate,
    PurgeParams,
    QueueInfo,
    QueueStats,
    RateLimit,
    RescueJob,
    Retention,
    TransitionResult,
    WorkerInfo,
)
from conveyor.drivers.started import StartsInserts
from conveyor.drivers.transactional import TransactionalWriter

T = TypeVar("T")

log = logging.getLogger("conveyor.engine")

_CAPABILITY_HINTS = {
    Capability.SHARED_ACROSS_PROCESSES: (
        "it keeps jobs inside one process; use a sqlite:/// URL to share them between processes"
    ),
    Capability.LISTEN_ACROSS_PROCESSES: "it cannot wake workers in other processes",
}

Outcome = Literal["ok", "unavailable", "error", "cancelled"]


class CapabilityMissing(ConveyorError):
    """The backend cannot do what the caller needs."""


@dataclass(frozen=True, slots=True)
class OperationEvent:
    """One call of a driver operation, as the engine saw it."""

    operation: str  # the contract name: job_fetch, job_finish_many ...
    duration: float  # seconds
    error: BaseException | None = None  # what it raised (already mapped), None on success

    @property
    def outcome(self) -> Outcome:
        if self.error is None:
            return "ok"
        if isinstance(self.error, BackendUnavailable):
            return "unavailable"
        if isinstance(self.error, Exception):
            return "error"
        return "cancelled"


Subscriber = Callable[[OperationEvent], None]


def _starter(driver: Driver) -> StartsInserts | None:
    """``driver`` when it can send inserts from the calling task (see
    :mod:`conveyor.drivers.started`). Only when its class defines ``start_insert`` beside the
    ``job_insert_many`` it would stand in for: a subclass that overrides ``job_insert_many``
    alone, or a wrapper that hands other attributes on to a driver inside, must see every
    insert."""
    cls = type(driver)
    owner = next((c for c in cls.__mro__ if "start_insert" in vars(c)), None)
    if owner is None or "job_insert_many" not in vars(owner):
        return None
    if next(c for c in cls.__mro__ if "job_insert_many" in vars(c)) is not owner:
        return None
    if not isinstance(driver, StartsInserts) or not driver.can_start_inserts:
        return None
    return driver


class Engine:
    def __init__(self, driver: Driver, *, subscribers: list[Subscriber] | None = None) -> None:
        self.driver = driver
        self.url = driver.url
        self.source_url = driver.source_url
        self.capabilities = driver.capabilities
        self.infrastructure_errors = driver.infrastructure_errors
        self._starts = _starter(driver)
        # Shared with the engines made by connect_another(): a subscriber sees every call, from
        # whichever thread made it.
        self._subscribers: list[Subscriber] = subscribers if subscribers is not None else []

    def __repr__(self) -> str:
        return f"Engine({self.driver!r})"

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, purpose: str) -> None:
        """Raise :class:`CapabilityMissing` naming ``purpose`` if the backend lacks it."""
        if capability not in self.capabilities:
            hint = _CAPABILITY_HINTS.get(capability, capability.value)
            raise CapabilityMissing(f"{self.url} cannot be used {purpose}: {hint}")

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` after every operation (on the thread that made it); returns a
        function that unsubscribes. A subscriber that raises is logged and otherwise ignored."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def _call(self, operation: str, pending: Awaitable[T]) -> T:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await pending
        except BaseException as exc:
            error = self._mapped(operation, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._emit(OperationEvent(operation, time.perf_counter() - started, error))

    def call_blocking(self, operation: str, call: Callable[[], T]) -> T:
        """:meth:`_call` for a driver call that blocks this thread (:meth:`blocking_inserter`)."""
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return call()
        except BaseException as exc:
            error = self._mapped(operation, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._emit(OperationEvent(operation, time.perf_counter() - started, error))

    def _mapped(self, operation: str, exc: BaseException) -> BaseException:
        """What a caller sees of ``exc``: Conveyor's own errors and cancellations unchanged, the
        backend's infrastructure errors as BackendUnavailable, anything else as BackendError."""
        if isinstance(exc, ConveyorError) or not isinstance(exc, Exception):
            return exc
        if isinstance(exc, self.infrastructure_errors):
            return BackendUnavailable(f"{operation} on {self.url} failed: {exc}")
        return BackendError(f"{operation} on {self.url} failed: {type(exc).__name__}: {exc}")

    def _emit(self, event: OperationEvent) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s took %.2f ms (%s)",
                event.operation,
                event.duration * 1000,
                event.outcome,
                extra={"event": event.operation, "outcome": event.outcome},
            )
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("an operation subscriber failed on %s", event.operation)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self, *, create: bool = True) -> None:
        await self._call("open", self.driver.open(create=create))

    async def close(self) -> None:
        await self._call("close", self.driver.close())

    def connect_another(self) -> Engine:
        return Engine(self.driver.connect_another(), subscribers=self._subscribers)

    async def migrate(self) -> list[str]:
        return await self._call("migrate", self.driver.migrate())

    async def setup_warnings(self) -> list[str]:
        return await self._call("setup_warnings", self.driver.setup_warnings())

    def transactional_writer(self) -> TransactionalWriter | None:
        """The driver's writer of inserts on the caller's own connection (see
        :mod:`conveyor.drivers.transactional`), or None when the backend cannot write into the
        caller's database (Redis, memory). Its plans do no I/O: the caller's connection runs
        them, and its errors reach the caller unchanged (they belong to the caller's own
        transaction), so they are neither mapped nor reported here."""
        return self.driver if isinstance(self.driver, TransactionalWriter) else None

    def blocking_inserter(self) -> BlockingInserts | None:
        """Inserts made from the calling thread, blocking it (see
        :mod:`conveyor.drivers.blocking`), or None when the driver cannot make them. Each call
        opens connections of its own; close it when done."""
        if not isinstance(self.driver, HasBlockingInserter):
            return None
        inserter = self.driver.blocking_inserter()
        return None if inserter is None else BlockingInserts(self, inserter)

    # -- jobs -------------------------------------------------------------------------------

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        return await self._call("job_insert_many", self.driver.job_insert_many(jobs, now=now))

    @property
    def starts_inserts(self) -> bool:
        """Whether :meth:`start_insert` can ever send (the driver has one)."""
        return self._starts is not None

    def start_insert(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> asyncio.Future[list[InsertResult]] | None:
        """The driver's :meth:`~conveyor.drivers.started.StartsInserts.start_insert`, reported
        and its errors mapped as :meth:`job_insert_many`'s; None when the driver has none or
        cannot send these jobs so."""
        if self._starts is None:
            return None
        sent = self._starts.start_insert(jobs, now=now)
        return None if sent is None else asyncio.ensure_future(self._call("job_insert_many", sent))

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        return await self._call("job_fetch", self.driver.job_fetch(params, now=now, wait=wait))

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        return await self._call(
            "job_extend_leases", self.driver.job_extend_leases(leases, lease_seconds, now=now)
        )

    async def job_finish_many(
        self, finishes: Sequence[FinishJob], *, retention: Retention, now: float | None = None
    ) -> list[TransitionResult]:
        return await self._call(
            "job_finish_many", self.driver.job_finish_many(finishes, retention=retention, now=now)
        )

    async def job_expired(self, *, limit: int, now: float | None = None) -> list[JobRecord]:
        return await self._call("job_expired", self.driver.job_expired(limit=limit, now=now))

    async def job_rescue_many(
        self, rescues: Sequence[RescueJob], *, now: float | None = None
    ) -> list[TransitionResult]:
        return await self._call("job_rescue_many", self.driver.job_rescue_many(rescues, now=now))

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        return await self._call(
            "job_promote_due", self.driver.job_promote_due(limit=limit, now=now)
        )

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        return await self._call("job_cancel_many", self.driver.job_cancel_many(ids, now=now))

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        return await self._call("job_retry_many", self.driver.job_retry_many(ids, now=now))

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int:
        return await self._call("job_purge", self.driver.job_purge(params, now=now))

    async def job_delete_many(self, ids: Sequence[str]) -> list[ChangeResult]:
        return await self._call("job_delete_many", self.driver.job_delete_many(ids))

    async def stats_add(self, samples: Sequence[QueueStats], *, now: float | None = None) -> None:
        return await self._call("stats_add", self.driver.stats_add(samples, now=now))

    async def stats_read(
        self, queues: Sequence[str] | None, *, since_minute: int
    ) -> list[QueueStats]:
        return await self._call(
            "stats_read", self.driver.stats_read(queues, since_minute=since_minute)
        )

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        return await self._call(
            "job_prune_finished", self.driver.job_prune_finished(retention, limit=limit, now=now)
        )

    async def job_progress_many(
        self, updates: Sequence[ProgressUpdate], *, now: float | None = None
    ) -> list[TransitionResult]:
        return await self._call(
            "job_progress_many", self.driver.job_progress_many(updates, now=now)
        )

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]:
        return await self._call("job_get_many", self.driver.job_get_many(ids))

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        return await self._call("job_list", self.driver.job_list(params))

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        return await self._call("job_count_by_state", self.driver.job_count_by_state(queue))

    # -- queues, workers, leadership --------------------------------------------------------

    async def queue_list(self) -> list[QueueInfo]:
        return await self._call("queue_list", self.driver.queue_list())

    async def queue_pause(self, queue: str) -> None:
        await self._call("queue_pause", self.driver.queue_pause(queue))

    async def queue_resume(self, queue: str) -> None:
        await self._call("queue_resume", self.driver.queue_resume(queue))

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        await self._call("worker_heartbeat", self.driver.worker_heartbeat(info, ttl=ttl, now=now))

    async def worker_deregister(self, worker_id: str) -> None:
        await self._call("worker_deregister", self.driver.worker_deregister(worker_id))

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        return await self._call("worker_list", self.driver.worker_list(now=now))

    async def route_register(self, routes: Mapping[str, str]) -> None:
        await self._call("route_register", self.driver.route_register(routes))

    async def route_list(self) -> dict[str, str]:
        return await self._call("route_list", self.driver.route_list())

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        return await self._call(
            "leader_acquire", self.driver.leader_acquire(name, holder, ttl=ttl, now=now)
        )

    async def leader_release(self, name: str, holder: str) -> None:
        await self._call("leader_release", self.driver.leader_release(name, holder))

    def notify(self, queue: str) -> None:
        self.driver.notify(queue)

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        await self._call("listen", self.driver.listen(queues, timeout))

    async def cancel_listen(self, worker_id: str, timeout: float) -> list[str]:
        return await self._call("cancel_listen", self.driver.cancel_listen(worker_id, timeout))

    # -- cron ---------------------------------------------------------------------------------

    async def cron_register(
        self, schedules: Sequence[CronSchedule], *, now: float | None = None
    ) -> dict[str, int | None]:
        return await self._call("cron_register", self.driver.cron_register(schedules, now=now))

    async def cron_fire(self, fire: CronFire, *, now: float | None = None) -> CronFireResult:
        return await self._call("cron_fire", self.driver.cron_fire(fire, now=now))

    async def cron_list(self) -> list[CronInfo]:
        return await self._call("cron_list", self.driver.cron_list())

    async def rate_limit_block(
        self, queue: str, seconds: float, *, now: float | None = None
    ) -> None:
        await self._call("rate_limit_block", self.driver.rate_limit_block(queue, seconds, now=now))

    async def rate_limit_wait(
        self, limits: Sequence[RateLimit], *, now: float | None = None
    ) -> dict[str, float]:
        return await self._call("rate_limit_wait", self.driver.rate_limit_wait(limits, now=now))

    async def group_block(
        self, queue: str, group: str, seconds: float, *, now: float | None = None
    ) -> None:
        await self._call("group_block", self.driver.group_block(queue, group, seconds, now=now))

    async def group_wait(
        self,
        queues: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        now: float | None = None,
    ) -> float | None:
        return await self._call("group_wait", self.driver.group_wait(queues, names=names, now=now))


class BlockingInserts:
    """A driver's blocking inserter behind the engine: errors mapped and operations reported
    as for ``Engine.job_insert_many``."""

    def __init__(self, engine: Engine, inserter: BlockingInserter) -> None:
        self._engine = engine
        self._inserter = inserter

    def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        return self._engine.call_blocking(
            "job_insert_many", lambda: self._inserter.job_insert_many(jobs, now=now)
        )

    def close(self) -> None:
        self._inserter.close()
