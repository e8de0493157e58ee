"""The outbox: jobs written into a table of the application's own database, inside its own
transaction, for a :class:`~conveyor.outbox.Relay` to move to Redis.

An :class:`Outbox` is a :class:`~conveyor.drivers.transactional.TransactionalWriter`: it does no
I/O to insert; ``insert_plan`` describes the write as statements that the caller's connection
runs, so a job exists (and will reach Redis) if and only if the caller's transaction commits.

**Duplicates.** A job id that already exists is found only when the relay writes the job to
Redis, which then keeps the first job and writes nothing (the relay counts it as a duplicate and
drops the row). So ``insert_plan`` reports every job ``inserted``, except a second job with the
same id in the same batch, which is reported ``duplicate`` and not written, as
``job_insert_many`` does. The outbox keeps no unique index on ids: rows leave it as soon as
they are moved, so it could only ever catch the duplicates that had not moved yet.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, LiteralString, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from conveyor._definition import check_queue_name
from conveyor._errors import InvalidArgument, UnsupportedURL
from conveyor.backends.sqlite._url import path_from_url
from conveyor.drivers.common import check_new_jobs
from conveyor.drivers.records import InsertResult, InsertStatus, JobState, NewJob
from conveyor.drivers.transactional import Dialect, Plan, Row, Statement
from conveyor.outbox import _sql

if TYPE_CHECKING:
    import psycopg

_JOB_ID: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,255}\Z")
# Jobs per SQLite statement: 10 parameters a job (and one :now) stay under the 999 variables
# that SQLite allowed before 3.32.
SQLITE_ROWS_PER_STATEMENT: Final = 90
POSTGRES_SCHEMES: Final = ("postgresql", "postgres")


def outbox_for_url(url: str) -> Outbox:
    """The outbox in the database at ``url``: ``postgresql://user@host/db[?schema=name]`` (the
    ``public`` schema by default; other options go to psycopg) or ``sqlite:///path.db``.

    No I/O: the table is created by :meth:`Outbox.ensure_schema`, ``conveyor migrate --outbox
    URL``, or when a relay starts."""
    scheme = url.partition("://")[0].lower()
    if scheme in POSTGRES_SCHEMES:
        return PostgresOutbox(url)
    if scheme == "sqlite":
        return SQLiteOutbox(url)
    raise UnsupportedURL(
        f"unsupported outbox URL {scheme + '://...'!r}: expected postgresql://user@host/db"
        "[?schema=name] or sqlite:///path/to/app.db"
    )


class Outbox:
    """Where ``enqueue(..., connection=conn)`` writes jobs bound for Redis; see the module."""

    url: str  # without credentials, for messages

    @property
    def dialect(self) -> Dialect:
        raise NotImplementedError

    def insert_plan(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Plan[list[InsertResult]]:
        """The statements that write ``jobs`` into the outbox on the caller's connection (one
        statement per batch on PostgreSQL, with a notification that wakes the relays at
        commit; the database check and one statement per 100 jobs on SQLite). Raises
        :class:`InvalidArgument` before the first statement if a job is invalid, and after the
        check if the connection is not to the outbox's database (nothing written then).

        The table must exist and be up to date (:meth:`ensure_schema`, ``conveyor migrate
        --outbox URL``, or a relay started once): on SQLite its absence, or a table made before
        jobs had headers, is an :class:`InvalidArgument` before the insert; on PostgreSQL, whose
        check rides on the insert itself to cost no round trip, a missing table is PostgreSQL's
        own error (``relation ... does not exist``), and a table without the ``headers``
        column an :class:`InvalidArgument` raised from PostgreSQL's; both abort the
        transaction.

        Each job's ``headers`` (see :mod:`conveyor.core.headers`) are written with it, and the
        relay passes them on to the job it inserts.

        ``now`` (epoch seconds) is the jobs' creation time, from which a ``delay`` counts; the
        database's clock when ``None``."""
        raise NotImplementedError

    def ensure_schema(self) -> None:
        """Create the outbox table if it is missing, or upgrade one made by an older Conveyor
        (idempotent; safe to run concurrently)."""
        raise NotImplementedError


def check_job(job: NewJob) -> None:
    """Raise :class:`InvalidArgument` if a backend would refuse ``job``."""
    headers = cast(object, job.headers)  # rows read back from a table can hold anything
    if headers is not None and not isinstance(headers, str):
        raise InvalidArgument(
            f"job {job.id!r}: headers must be the text of a JSON object, got "
            f"{type(headers).__name__}"
        )
    check_new_jobs([job])
    job_id = cast(object, job.id)  # rows read back from a table can hold anything
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidArgument(f"invalid job id {job.id!r}: 1-255 characters, no controls")
    check_queue_name(job.queue)
    if not isinstance(cast(object, job.payload), bytes):
        raise InvalidArgument(f"job {job.id!r}: the payload must be bytes of JSON")
    if job.keep_completed is not None or job.keep_failed is not None:
        raise InvalidArgument(
            f"job {job.id!r}: the outbox does not carry a retention of the job's own "
            "(keep_completed / keep_failed, from the enqueue or the job's definition); enqueue "
            "it without one, or rely on the queue's retention (WorkerConfig.retention)"
        )
    if job.group is not None:
        raise InvalidArgument(
            f"job {job.id!r}: the outbox does not carry a job's group (group_key); enqueue it "
            "without connection=, or from a definition without group_key"
        )


def _accepted(jobs: Sequence[NewJob], now: float | None) -> tuple[list[NewJob], list[InsertResult]]:
    """Check ``jobs`` as a backend would, before anything is written; returns the jobs to write
    (a repeated id in the batch is written once) and every job's result."""
    for job in jobs:
        check_job(job)
        if job.dedup is not None:
            # The outbox's rows carry no key, and whether a key is held can only be decided
            # where the job is inserted (the relay's Redis), not in the caller's transaction.
            raise InvalidArgument(
                f"job {job.id!r}: dedup= cannot be written through the outbox; enqueue it "
                "without connection= (or give it a job_id: an id deduplicates through the outbox)"
            )
    clock = time.time() if now is None else now
    seen: set[str] = set()
    written: list[NewJob] = []
    results: list[InsertResult] = []
    for job in jobs:
        later = (job.run_at is not None and job.run_at > clock) or (
            job.run_at is None and job.delay > 0
        )
        state = JobState.SCHEDULED if later else JobState.QUEUED
        if job.id in seen:
            results.append(InsertResult(job.id, InsertStatus.DUPLICATE, state))
            continue
        seen.add(job.id)
        written.append(job)
        results.append(InsertResult(job.id, InsertStatus.INSERTED, state))
    return written, results


# -- PostgreSQL -----------------------------------------------------------------------------------


class PostgresOutbox(Outbox):
    """The ``conveyor_outbox`` table in one schema of a PostgreSQL database (psycopg 3)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in POSTGRES_SCHEMES:
            raise UnsupportedURL(f"not a PostgreSQL URL: {parts.scheme}://...")
        options = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in options if key == "schema"]
        self.schema = schemas[-1] if schemas else "public"
        if not _sql.is_identifier(self.schema):
            raise UnsupportedURL(
                f"invalid schema {self.schema!r} in the outbox URL: letters, digits and '_', "
                "not starting with a digit, at most 63"
            )
        rest = [(key, value) for key, value in options if key != "schema"]
        # What psycopg connects with: the URL without the option it does not know.
        self.conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
        self.database = unquote(parts.path.lstrip("/")) or os.environ.get("PGDATABASE") or None
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        self.url = f"postgresql://{host}{port}/{self.database or ''}?schema={self.schema}"
        self.channel = f"conveyor_outbox.{self.schema}"[:63]
        self.queries = _sql.postgres_queries(self.schema, self.channel)

    def __repr__(self) -> str:
        return f"PostgresOutbox({self.url!r})"

    @property
    def dialect(self) -> Dialect:
        return "postgresql"

    def insert_plan(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Plan[list[InsertResult]]:
        written, results = _accepted(jobs, now)  # before the generator: checked at once
        return self._plan(written, results, now)

    def _plan(
        self, jobs: list[NewJob], results: list[InsertResult], now: float | None
    ) -> Plan[list[InsertResult]]:
        if not jobs:
            return results
        params = {
            "database": self.database,
            "now": now,
            "ids": [j.id for j in jobs],
            "queues": [j.queue for j in jobs],
            "names": [j.name for j in jobs],
            "payloads": [j.payload for j in jobs],
            "priorities": [j.priority for j in jobs],
            "max_attempts": [j.max_attempts for j in jobs],
            "run_ats": [j.run_at for j in jobs],
            "delays": [float(j.delay) for j in jobs],
            "headers": [j.headers for j in jobs],
            "channel": self.channel,
        }
        try:
            rows = yield Statement(self.queries["outbox_insert_many"], params)
        except Exception as exc:
            if _lacks_headers_column(exc):
                raise InvalidArgument(
                    f"the outbox table in {self.url} was made by an older Conveyor and has no "
                    f"headers column: upgrade it with `conveyor migrate --outbox {self.url}` "
                    "(or start a relay of this version once); nothing was written, and "
                    "PostgreSQL has aborted the transaction"
                ) from exc
            raise
        reached = bool(rows and rows[0][0])
        if not reached:
            raise InvalidArgument(
                f"the connection is not to the outbox's database {self.database!r} "
                f"({self.url}); nothing was written"
            )
        return results

    def schema_statements(self) -> list[LiteralString]:
        """The statements that create the outbox, or upgrade a table made by an older Conveyor
        (for an application's own migrations; each one does nothing when its work is done)."""
        q = self.queries
        return [
            q["outbox__create_schema"],
            q["outbox__create_table"],
            q["outbox__create_pending_index"],
            q["outbox__add_headers"],
        ]

    def ensure_schema(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo) as conn:
            self.create_with(conn)

    def _names(self) -> dict[str, str]:
        return {
            "table": f'"{self.schema}".conveyor_outbox',
            "index": f'"{self.schema}".conveyor_outbox_pending_idx',
        }

    def create_with(self, conn: psycopg.Connection[Any]) -> None:
        """Create what is missing of the outbox through ``conn`` and commit, under an advisory
        lock so that concurrent starters do not race; no DDL (and no lock) when it is all
        there."""
        with conn.transaction():
            found = conn.execute(self.queries["outbox__exists"], self._names()).fetchone()
            if found and found[0]:
                return
            conn.execute(self.queries["outbox__lock"], {"schema": self.schema})
            for statement in self.schema_statements():
                conn.execute(statement)

    async def create_with_async(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            cursor = await conn.execute(self.queries["outbox__exists"], self._names())
            found = await cursor.fetchone()
            if found and found[0]:
                return
            await conn.execute(self.queries["outbox__lock"], {"schema": self.schema})
            for statement in self.schema_statements():
                await conn.execute(statement)


# -- SQLite ---------------------------------------------------------------------------------------


class SQLiteOutbox(Outbox):
    """The ``conveyor_outbox`` table in a SQLite database file (the application's own)."""

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        if url.partition("?")[2]:
            raise UnsupportedURL(f"a SQLite outbox URL takes no options: {url!r}")
        self.url = f"sqlite:///{self.path}"
        self.queries = _sql.SQLITE

    def __repr__(self) -> str:
        return f"SQLiteOutbox({self.url!r})"

    @property
    def dialect(self) -> Dialect:
        return "sqlite"

    @property
    def realpath(self) -> str:
        return os.path.realpath(self.path)

    def insert_plan(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> Plan[list[InsertResult]]:
        written, results = _accepted(jobs, now)
        return self._plan(written, results, now)

    def _plan(
        self, jobs: list[NewJob], results: list[InsertResult], now: float | None
    ) -> Plan[list[InsertResult]]:
        if not jobs:
            return results
        rows: list[Row] = yield Statement(self.queries["outbox__database"], {})
        self._check_reached(rows)
        for start in range(0, len(jobs), SQLITE_ROWS_PER_STATEMENT):
            chunk = jobs[start : start + SQLITE_ROWS_PER_STATEMENT]
            params: dict[str, Any] = {"now": now}
            for n, job in enumerate(chunk):
                params[f"id_{n}"] = job.id
                params[f"queue_{n}"] = job.queue
                params[f"name_{n}"] = job.name
                params[f"payload_{n}"] = job.payload
                params[f"priority_{n}"] = job.priority
                params[f"max_attempts_{n}"] = job.max_attempts
                params[f"run_at_{n}"] = job.run_at
                params[f"delay_{n}"] = float(job.delay)
                params[f"headers_{n}"] = job.headers
            yield Statement(_insert_text(len(chunk)), params)
        return results

    def _check_reached(self, rows: list[Row]) -> None:
        file, has_table, has_headers = rows[0] if rows else ("", 0, 0)
        if not file or os.path.realpath(str(file)) != self.realpath:
            raise InvalidArgument(
                f"the connection is not to the outbox's database {self.realpath!r} (its main "
                f"database is {str(file) or 'in memory'!r}); nothing was written"
            )
        if not has_table:
            raise InvalidArgument(
                f"{self.realpath!r} has no outbox table yet: run `conveyor migrate --outbox "
                f"{self.url}` or start the relay once (or call ensure_schema())"
            )
        if not has_headers:
            raise InvalidArgument(
                f"the outbox table in {self.realpath!r} was made by an older Conveyor and has no "
                f"headers column: upgrade it with `conveyor migrate --outbox {self.url}` (or "
                "start a relay of this version once, or call ensure_schema()); nothing was written"
            )

    def schema_statements(self) -> list[str]:
        """The statements that create the outbox (for an application's own migrations). A table
        made before jobs had headers also needs ``upgrade_statements`` (SQLite cannot add a
        column only if it is missing: the caller checks, or runs them once)."""
        return [self.queries["outbox__create_table"], self.queries["outbox__create_pending_index"]]

    def upgrade_statements(self) -> list[str]:
        """The statements that bring a table made by an older Conveyor up to date (once: they
        fail on a table that has what they add)."""
        return [self.queries["outbox__add_headers"]]

    def ensure_schema(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            self.create_with(conn)
        finally:
            conn.close()

    def create_with(self, conn: sqlite3.Connection) -> None:
        """Create the outbox through ``conn`` (in autocommit mode), or upgrade a table made by an
        older Conveyor, in one write transaction (which serializes concurrent starters)."""
        try:
            conn.execute("BEGIN IMMEDIATE")  # inside: an exception as it returns rolls it back
            for statement in self.schema_statements():
                conn.execute(statement)
            found = conn.execute(self.queries["outbox__has_headers"]).fetchone()
            if not (found and found[0]):
                for statement in self.upgrade_statements():
                    conn.execute(statement)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _lacks_headers_column(exc: Exception) -> bool:
    """Whether ``exc`` (psycopg's, or a SQLAlchemy error wrapping it) is PostgreSQL saying that
    the outbox table has no ``headers`` column: a table not upgraded yet."""
    for error in (exc, getattr(exc, "orig", None)):
        if getattr(error, "sqlstate", None) == "42703" and '"headers"' in str(error):
            return True
    return False


@lru_cache(maxsize=SQLITE_ROWS_PER_STATEMENT)
def _insert_text(rows: int) -> str:
    return _sql.sqlite_insert(rows)
