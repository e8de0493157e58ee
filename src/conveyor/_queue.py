"""``Queue``: the client API processes use to enqueue, inspect and repair jobs.

A Queue holds one lazily opened driver: constructing it does no I/O, the first call connects.
Use it as an async context manager (or call :meth:`Queue.close`) to release the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from conveyor import _building as building
from conveyor import tracing as _tracing
from conveyor._building import ByName, Keep
from conveyor._coalesce import Coalescer
from conveyor._dedup import DedupPolicy
from conveyor._definition import (
    DEFAULT_ATTEMPTS,
    DEFAULT_QUEUE,
    JobDef,
    JobRequest,
)
from conveyor._errors import (
    BackendUnavailable,
    InvalidArgument,
)
from conveyor._handle import JobHandle, PendingEnqueue, handles
from conveyor._queue_inspection import QueueInspection
from conveyor.backends.registry import configured_url, driver_for_url, shown_url
from conveyor.core.clock import BackendClock, Clock
from conveyor.core.serialization import (
    DEFAULT_MAX_PAYLOAD_BYTES,
)
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    InsertResult,
    NewJob,
)
from conveyor.drivers.transactional import TransactionalWriter
from conveyor.engine import Engine

if TYPE_CHECKING:
    from conveyor.tracing._otel import Send

R = TypeVar("R")
P = TypeVar("P", bound=BaseModel)

ROUTES_TTL = 30.0  # seconds the routes workers declared are reused by enqueue_by_name
ROUTES_RETRY = 2.0  # how soon an unknown name makes them read again

log = logging.getLogger("conveyor.queue")


class Queue(QueueInspection):
    """Enqueue and inspect jobs on one backend.

    ``Queue.from_url("sqlite:///conveyor.db")`` (the default), ``"redis://host:6379/0"``,
    ``"memory://name"``.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Clock | None = None,
        create: bool = True,
        outbox: TransactionalWriter | str | None = None,
        tracing: bool | None = None,
        coalesce: bool = True,
    ) -> None:
        """``create=False`` (inspection tools) never creates a store that does not exist: the
        first call raises :class:`BackendUnavailable` saying where it looked instead.

        ``outbox`` lets a queue whose backend cannot write into the application's database
        (Redis) take ``enqueue(..., connection=conn)``: the job is written into an outbox table
        of that database, inside the caller's transaction, and a relay moves it to the queue.
        Give the outbox's URL (``"postgresql://..."``, resolved on first use) or a
        :class:`~conveyor.drivers.transactional.TransactionalWriter`. A SQL backend (SQLite,
        PostgreSQL) writes such jobs into its own tables and needs none.

        ``tracing``: make an OpenTelemetry span per enqueue and carry its context in the jobs
        (see :mod:`conveyor.tracing`); by default when ``opentelemetry-api`` is installed and
        ``$OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` does not list ``conveyor``.

        ``coalesce``: concurrent one-job enqueues of this process share round trips (see
        :mod:`conveyor._coalesce`); each caller still gets its own handle and its own error.
        """
        # Everything below talks to storage through the engine, never to the driver directly.
        self._driver = driver if isinstance(driver, Engine) else Engine(driver)
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._create = create
        self._routes: tuple[float, dict[str, str]] = (float("-inf"), {})
        self.max_payload_bytes = max_payload_bytes
        self.clock: Clock = clock or BackendClock()
        self.outbox: TransactionalWriter | str | None = outbox
        # Decided once: without OpenTelemetry the enqueue path never looks at tracing again.
        self._producer = _tracing.producer(tracing)
        self._coalescer: Coalescer | None = None
        if coalesce:
            starts = self._start_insert if self._driver.starts_inserts else None
            self._coalescer = Coalescer(self._insert_many, start_insert=starts)

    @property
    def traced(self) -> bool:
        """Whether enqueues here are traced (see :mod:`conveyor.tracing`)."""
        return self._producer is not None

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> Queue:
        """A queue on ``url``, else ``$CONVEYOR_URL``, else ``$REDIS_URL``, else
        ``sqlite:///conveyor.db``."""
        return cls(driver_for_url(configured_url(url)), **options)

    @property
    def url(self) -> str:
        return self._driver.url

    @property
    def driver(self) -> Engine:
        """The engine over this queue's driver (it fulfils the driver contract)."""
        return self._driver

    async def connect(self) -> Engine:
        """Open the connection if it is not open yet, and return the driver."""
        if self._opened:
            return self._driver
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self._driver.open(create=self._create)
                self._opened = True
        return self._driver

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._driver.close()

    async def __aenter__(self) -> Queue:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- enqueue -------------------------------------------------------------------------------

    async def enqueue(
        self,
        definition: JobDef[P, R],
        payload: P,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        attempts: int | None = None,
        connection: object | None = None,
        dedup: DedupPolicy | None = None,
        keep_completed: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
    ) -> JobHandle[R]:
        """Validate ``payload`` and store the job; one round trip.

        With a ``job_id`` that already exists nothing is written: the handle points at the
        existing job and ``handle.duplicate`` is true.

        ``dedup=`` deduplicates by a key as well, for as long as its mode says
        (:class:`UntilStarted`, :class:`UntilFinished`, :class:`Throttle`, :class:`Debounce`):
        while another job holds the key, the handle points at that job and
        ``handle.outcome`` is ``InsertStatus.DUPLICATE`` (``REPLACED`` when a debounced job
        took the new payload and run time).

        With ``connection=`` the job is written with that connection, inside its current
        transaction, so it exists if and only if that transaction commits: a rollback leaves
        no job that any worker or reader ever saw. It takes a ``sqlite3.Connection`` to this
        queue's file, a psycopg 3 ``Connection`` or ``AsyncConnection`` to its PostgreSQL
        database, or a SQLAlchemy 2 ``Session``, ``Connection``, ``AsyncSession`` or
        ``AsyncConnection`` on one of those drivers (its current transaction, begun if it is
        not yet); on Redis, a connection to the queue's ``outbox``. A blocking connection
        runs its statements here, in the event loop's thread, like any other query made with
        it there. It is refused with :class:`InvalidArgument`, before anything is written, if
        it is of another type or database, or in autocommit mode outside a transaction (the
        job would be committed at once). A sqlite3 connection in its default mode outside a
        transaction is fine: the insert opens the transaction, and the job is committed by
        your next ``commit()`` (or discarded by ``rollback()``). Errors of the connection
        itself (a lock timeout, a failed transaction) reach you as its own exceptions.

        ``keep_completed`` / ``keep_failed`` override the definition's retention for this job:
        seconds (or a timedelta) it is kept after it completed / failed, ``0`` to have it
        deleted by the next prune (its result too: ``handle.result()`` cannot read it after).
        """
        request = definition.request(
            payload,
            job_id=job_id,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            attempts=attempts,
            dedup=dedup,
            keep_completed=keep_completed,
            keep_failed=keep_failed,
        )
        (handle,) = await self.enqueue_many([request], connection=connection)
        return handle

    async def enqueue_many(
        self, requests: Sequence[JobRequest[Any, Any]], *, connection: object | None = None
    ) -> list[JobHandle[Any]]:
        """Enqueue many jobs in one round trip; build them with ``definition.request(...)``.

        Every payload is validated before anything is written, so a bad one writes nothing.
        ``connection=``: written inside that connection's transaction, see :meth:`enqueue`.
        """
        if self._producer is None or not requests:
            return await self._enqueue_many(requests, connection, None)
        with self._producer.send(_queues_of(requests)) as sent:
            return await self._enqueue_many(requests, connection, sent)

    @contextlib.contextmanager
    def building(
        self, requests: Sequence[JobRequest[Any, Any]]
    ) -> Generator[list[NewJob], None, None]:
        """The jobs of ``requests``, validated and built as :meth:`enqueue_many` builds them,
        for :class:`SyncQueue` to write from its caller's thread; traced, the span covers the
        block (the write inside it)."""
        if self._producer is None or not requests:
            yield building.new_jobs(requests, self.max_payload_bytes)
            return
        with self._producer.send(_queues_of(requests)) as sent:
            yield building.new_jobs(requests, self.max_payload_bytes, sent)

    @property
    def coalesces(self) -> bool:
        """Whether concurrent one-job enqueues share round trips (``coalesce=``)."""
        return self._coalescer is not None

    async def _enqueue_many(
        self,
        requests: Sequence[JobRequest[Any, Any]],
        connection: object | None,
        sent: Send | None,
    ) -> list[JobHandle[Any]]:
        if connection is not None:
            return await (await self._pending_many(requests, sent)).write_async(connection)
        new_jobs = building.new_jobs(requests, self.max_payload_bytes, sent)
        return await self._insert(new_jobs, [r.definition for r in requests])

    async def enqueue_by_name(
        self,
        name: str,
        payload: Mapping[str, Any] | str | bytes,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        queue: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        connection: object | None = None,
        dedup: DedupPolicy | None = None,
        keep_completed: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
        version: int = 1,
    ) -> JobHandle[Any]:
        """Enqueue without the definition (another service, another language's producer).

        The payload must be a JSON object; the worker validates it against the definition before
        the handler runs. Without ``queue``, the job goes to the queue workers declared for
        ``name`` (they publish it when they start); a name no worker has declared goes to
        ``default``, with a warning in the log. ``connection=``: written inside that
        connection's transaction, see :meth:`enqueue`; ``dedup=``, ``keep_completed=`` and
        ``keep_failed=`` as for :meth:`enqueue` (the default dedup key is the name and the
        payload's canonical JSON, as a typed enqueue's). ``version``: the version of the
        definition whose shape the payload has; a worker with a newer one upgrades it first.
        """
        args: ByName = (
            name,
            payload,
            job_id,
            delay,
            run_at,
            priority,
            queue,
            attempts,
            dedup,
            version,
        )
        keep = (keep_completed, keep_failed)
        if self._producer is None:
            return await self._enqueue_by_name(args, keep, connection, None)
        with self._producer.send(None if queue is None else [queue]) as sent:
            return await self._enqueue_by_name(args, keep, connection, sent)

    async def _enqueue_by_name(
        self,
        args: ByName,
        keep: Keep,
        connection: object | None,
        sent: Send | None,
    ) -> JobHandle[Any]:
        new = await self._new_job_by_name(args, keep, sent)
        if connection is not None:
            pending = PendingEnqueue(self, [new], [None], *await self._writer())
            (handle,) = await pending.write_async(connection)
        else:
            (handle,) = await self._insert([new], [None])
        return handle

    async def pending_many(self, requests: Sequence[JobRequest[Any, Any]]) -> PendingEnqueue:
        """The jobs of ``requests`` validated and built, with the writer that will write them
        on a connection of the caller's (see :class:`PendingEnqueue`); what ``enqueue_many(...,
        connection=)`` does in two steps, for callers that run the second one elsewhere
        (:class:`SyncQueue` runs it in the caller's thread). Traced, its span covers building
        the jobs (the write comes later)."""
        if self._producer is None or not requests:
            return await self._pending_many(requests, None)
        with self._producer.send(_queues_of(requests)) as sent:
            return await self._pending_many(requests, sent)

    async def _pending_many(
        self, requests: Sequence[JobRequest[Any, Any]], sent: Send | None
    ) -> PendingEnqueue:
        new_jobs = building.new_jobs(requests, self.max_payload_bytes, sent)
        writer, target = await self._writer()
        return PendingEnqueue(self, new_jobs, [r.definition for r in requests], writer, target)

    async def pending_by_name(
        self,
        name: str,
        payload: Mapping[str, Any] | str | bytes,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        queue: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        dedup: DedupPolicy | None = None,
        keep_completed: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
        version: int = 1,
    ) -> PendingEnqueue:
        """:meth:`pending_many` for :meth:`enqueue_by_name`."""
        args: ByName = (
            name,
            payload,
            job_id,
            delay,
            run_at,
            priority,
            queue,
            attempts,
            dedup,
            version,
        )
        keep = (keep_completed, keep_failed)
        if self._producer is None:
            new = await self._new_job_by_name(args, keep, None)
        else:
            with self._producer.send(None if queue is None else [queue]) as sent:
                new = await self._new_job_by_name(args, keep, sent)
        return PendingEnqueue(self, [new], [None], *await self._writer())

    async def _writer(self) -> tuple[TransactionalWriter, str]:
        """The writer of jobs on the caller's connection, and what it writes into (for
        messages): this queue's SQL backend, else its outbox."""
        writer = self._driver.transactional_writer()
        if writer is not None:
            try:
                await self.connect()  # the schema exists and is up to date before anyone writes
            except BackendUnavailable as exc:
                if "locked" not in str(exc):
                    raise
                raise BackendUnavailable(
                    f"{exc}; if the transaction of connection= holds that lock, open the queue "
                    "before it (await queue.connect(), e.g. at startup): the first open of a "
                    "file creates the queue's tables"
                ) from exc
            return writer, f"this queue's database ({shown_url(self.url)})"
        outbox = self.outbox
        if outbox is None:
            scheme = self.url.partition("://")[0]
            raise InvalidArgument(
                f"connection= needs a SQL backend (sqlite://, postgresql://) or an outbox, and "
                f"this queue is on {scheme}://: "
                "Queue.from_url('redis://...', outbox='postgresql://...')"
            )
        if isinstance(outbox, str):
            outbox = self.outbox = _outbox_for_url(outbox)
        return outbox, f"the outbox ({outbox!r})"

    async def _new_job_by_name(self, args: ByName, keep: Keep, sent: Send | None) -> NewJob:
        return await building.new_job_by_name(args, keep, self.max_payload_bytes, sent, self._route)

    async def _route(self, name: str) -> str:
        """The queue workers declared for job ``name``: read from the backend at most every few
        seconds, and at once the first time a name is not known."""
        at, routes = self._routes
        now = time.monotonic()
        if now - at > ROUTES_TTL or (name not in routes and now - at > ROUTES_RETRY):
            driver = await self.connect()
            routes = await driver.route_list()
            self._routes = (now, routes)
        queue = routes.get(name)
        if queue is None:
            log.warning(
                "no worker has declared job %r; enqueued to queue %r (pass queue= if it belongs "
                "to another queue)",
                name,
                DEFAULT_QUEUE,
                extra={"event": "enqueued", "job_name": name, "queue": DEFAULT_QUEUE},
            )
            return DEFAULT_QUEUE
        return queue

    async def _insert(
        self, new_jobs: list[NewJob], definitions: Sequence[JobDef[Any, Any] | None]
    ) -> list[JobHandle[Any]]:
        if not new_jobs:
            return []
        now = self.clock.now()
        if len(new_jobs) == 1 and self._coalescer is not None:
            if not self._opened:
                await self.connect()
            results = [await self._coalescer.insert(new_jobs[0], now)]
        else:
            driver = await self.connect()
            results = await driver.job_insert_many(new_jobs, now=now)
        return handles(self, results, definitions)

    async def _insert_many(self, jobs: Sequence[NewJob], now: float | None) -> list[InsertResult]:
        return await self._driver.job_insert_many(jobs, now=now)

    def _start_insert(
        self, jobs: Sequence[NewJob], now: float | None
    ) -> asyncio.Future[list[InsertResult]] | None:
        return self._driver.start_insert(jobs, now=now)


def _queues_of(requests: Sequence[JobRequest[Any, Any]]) -> list[str]:
    """The queues ``requests`` go to, for the name of their span."""
    return [r.definition.queue if r.queue is None else r.queue for r in requests]


def _outbox_for_url(url: str) -> TransactionalWriter:
    """The outbox at ``url``, from :mod:`conveyor.outbox` (imported only when an outbox is
    used: it needs the client library of its database)."""
    from conveyor.outbox import outbox_for_url

    return outbox_for_url(url)
