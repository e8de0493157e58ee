"""``Queue``: the client API processes use to enqueue, inspect and repair jobs.

A Queue holds one lazily opened driver: constructing it does no I/O, the first call connects.
Use it as an async context manager (or call :meth:`Queue.close`) to release the connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from conveyor import _validation
from conveyor import tracing as _tracing
from conveyor._coalesce import Coalescer
from conveyor._dedup import DedupPolicy, dedup_of
from conveyor._definition import (
    DEFAULT_ATTEMPTS,
    DEFAULT_QUEUE,
    JobDef,
    JobRequest,
    check_queue_name,
)
from conveyor._errors import (
    BackendUnavailable,
    InvalidArgument,
)
from conveyor._handle import JobHandle, PendingEnqueue, handles
from conveyor._queue_inspection import QueueInspection
from conveyor.backends.registry import configured_url, driver_for_url, shown_url
from conveyor.core.clock import BackendClock, Clock
from conveyor.core.headers import encode_headers
from conveyor.core.serialization import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    encode_payload,
    encode_untyped_payload,
)
from conveyor.core.versions import check_version, version_header
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import (
    Dedup,
    InsertResult,
    JobGroup,
    NewJob,
)
from conveyor.drivers.transactional import TransactionalWriter
from conveyor.engine import Engine

if TYPE_CHECKING:
    from conveyor.tracing._otel import Send

R = TypeVar("R")
P = TypeVar("P", bound=BaseModel)

# enqueue_by_name's arguments, from name to version, as _new_job_by_name takes them.
_ByName = tuple[
    str,
    Mapping[str, Any] | str | bytes,
    str | None,
    float | timedelta | None,
    datetime | None,
    int,
    str | None,
    int,
    DedupPolicy | None,
    int,
]

_JOB_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,255}\Z")
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
        self._coalescer = Coalescer(self._insert_many) if coalesce else None

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
            yield self._new_jobs(requests)
            return
        with self._producer.send(_queues_of(requests)) as sent:
            yield self._new_jobs(requests, sent)

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
        new_jobs = self._new_jobs(requests, sent)
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
        args: _ByName = (
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
        args: _ByName,
        keep: tuple[float | timedelta | None, float | timedelta | None],
        connection: object | None,
        sent: Send | None,
    ) -> JobHandle[Any]:
        new = await self._new_job_by_name(*args, keep, sent)
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
        new_jobs = self._new_jobs(requests, sent)
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
        args: _ByName = (
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
            new = await self._new_job_by_name(*args, keep, None)
        else:
            with self._producer.send(None if queue is None else [queue]) as sent:
                new = await self._new_job_by_name(*args, keep, sent)
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

    async def _new_job_by_name(
        self,
        name: str,
        payload: Mapping[str, Any] | str | bytes,
        job_id: str | None,
        delay: float | timedelta | None,
        run_at: datetime | None,
        priority: int,
        queue: str | None,
        attempts: int,
        dedup: DedupPolicy | None,
        version: int,
        keep: tuple[float | timedelta | None, float | timedelta | None],
        sent: Send | None,
    ) -> NewJob:
        headers = version_header(check_version(version, "version", error=InvalidArgument))
        data = encode_untyped_payload(name, payload, self.max_payload_bytes)
        keyed, delay = dedup_of(dedup, name, data, delay, run_at)
        job_id = new_job_ids(1)[0] if job_id is None else _check_job_id(job_id)
        if queue is None:
            queue = await self._route(name)
        new = self._build(
            name,
            data,
            job_id,
            delay,
            run_at,
            priority,
            queue,
            attempts,
            keyed,
            keep,
            headers=headers,
            trace=None if sent is None else sent.headers,
        )
        if sent is not None:
            sent.built([new])
        return new

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

    def _new_jobs(
        self, requests: Sequence[JobRequest[Any, Any]], sent: Send | None = None
    ) -> list[NewJob]:
        ids = iter(new_job_ids(sum(1 for r in requests if r.job_id is None)))
        if sent is None:
            return [self._new_job(r, ids, None) for r in requests]
        jobs = [self._new_job(r, ids, sent.headers) for r in requests]
        sent.built(jobs)
        return jobs

    def _new_job(
        self,
        request: JobRequest[Any, Any],
        ids: Iterator[str],
        trace: Mapping[str, str] | None,
    ) -> NewJob:
        d = request.definition
        data = encode_payload(d.name, d.payload_type, request.payload, self.max_payload_bytes)
        dedup, delay = dedup_of(request.dedup, d.name, data, request.delay, request.run_at)
        return self._build(
            d.name,
            data,
            next(ids) if request.job_id is None else _check_job_id(request.job_id),
            delay,
            request.run_at,
            d.priority if request.priority is None else request.priority,
            d.queue if request.queue is None else request.queue,
            d.attempts if request.attempts is None else request.attempts,
            dedup,
            (
                d.keep_completed if request.keep_completed is None else request.keep_completed,
                d.keep_failed if request.keep_failed is None else request.keep_failed,
            ),
            d.group_of(request.payload),
            d.headers,
            trace,
        )

    def _build(
        self,
        name: str,
        data: bytes,
        job_id: str,
        delay: float | timedelta | None,
        run_at: datetime | None,
        priority: int,
        queue: str,
        attempts: int,
        dedup: Dedup | None = None,
        keep: tuple[float | timedelta | None, float | timedelta | None] = (None, None),
        group: JobGroup | None = None,
        headers: Mapping[str, str] | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> NewJob:
        if delay is not None and run_at is not None:
            raise InvalidArgument("pass either delay or run_at, not both")
        kept = [
            None if k is None else _validation.seconds(k, what, error=InvalidArgument)
            for k, what in zip(keep, ("keep_completed", "keep_failed"), strict=True)
        ]
        return NewJob(
            id=job_id,
            queue=check_queue_name(queue),
            name=name,
            payload=data,
            priority=_validation.priority(priority, error=InvalidArgument),
            max_attempts=_validation.attempts(attempts, error=InvalidArgument),
            run_at=None if run_at is None else _timestamp(run_at),
            delay=0.0
            if delay is None
            else _validation.seconds(delay, "delay", error=InvalidArgument),
            dedup=dedup,
            keep_completed=kept[0],
            keep_failed=kept[1],
            group=group,
            # The producer's trace context (conveyor.tracing), under Conveyor's own headers.
            headers=encode_headers({**trace, **(headers or {})} if trace else headers or {}),
        )

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


def _queues_of(requests: Sequence[JobRequest[Any, Any]]) -> list[str]:
    """The queues ``requests`` go to, for the name of their span."""
    return [r.definition.queue if r.queue is None else r.queue for r in requests]


def _outbox_for_url(url: str) -> TransactionalWriter:
    """The outbox at ``url``, from :mod:`conveyor.outbox` (imported only when an outbox is
    used: it needs the client library of its database)."""
    from conveyor.outbox import outbox_for_url

    return outbox_for_url(url)


def new_job_ids(count: int) -> list[str]:
    """``count`` random job ids: 96 bits each, in 16 URL-safe characters. Short, because a store
    keeps every id in more than one place (a backlog of a million jobs pays for each byte twice
    over), and random enough that ids never collide in practice (a collision would make a new
    job look like a duplicate of an old one). One read of the OS's random source for them all:
    bulk enqueues make thousands at a time."""
    text = base64.urlsafe_b64encode(secrets.token_bytes(12 * count)).decode()
    return [text[i : i + 16] for i in range(0, 16 * count, 16)]


def _check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidArgument(f"invalid job_id {job_id!r}: 1-255 characters, no control characters")
    return job_id


def _timestamp(run_at: object) -> float:
    if not isinstance(run_at, datetime) or run_at.tzinfo is None:
        raise InvalidArgument(
            f"run_at must be a timezone-aware datetime, got {run_at!r}; "
            "e.g. datetime.now(UTC) + timedelta(hours=1)"
        )
    stamp = run_at.timestamp()
    if not 0 <= stamp < _validation.MAX_EPOCH:
        raise InvalidArgument(f"run_at must be between 1970 and 2200, got {run_at.isoformat()}")
    return stamp
