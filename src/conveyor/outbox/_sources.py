"""The relay's side of the outbox: read the oldest committed rows, delete the moved ones, set
aside the refused ones, wait for more. One class per database; the relay sees only
:class:`Source`.

Every failure to reach the database is raised as :class:`BackendUnavailable`, after dropping
the connection: the next call connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from conveyor._errors import BackendUnavailable
from conveyor.drivers.records import NewJob
from conveyor.outbox._outbox import PostgresOutbox, SQLiteOutbox

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("conveyor.relay")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    id: str
    queue: str
    name: str
    payload: bytes
    priority: int
    max_attempts: int
    run_at: float | None
    delay: float
    created_at: float
    # As written (NULL in rows written before the column existed: no headers); a value that is
    # not text is refused by ``check_job`` and the row set aside, like any other bad column.
    headers: str | None = None

    def job(self, now: float) -> NewJob:
        """The job to insert at database time ``now``: a delay counts from the row's creation,
        so the relay hands over only what is left of it (Redis adds it to its own clock)."""
        delay = 0.0 if self.run_at is not None else max(0.0, self.created_at + self.delay - now)
        return NewJob(
            id=self.id,
            queue=self.queue,
            name=self.name,
            payload=self.payload,
            priority=self.priority,
            max_attempts=self.max_attempts,
            run_at=self.run_at,
            delay=delay if delay > 0 else 0.0,
            headers=self.headers,
        )


@dataclass(frozen=True, slots=True)
class Taken:
    rows: list[OutboxRow]
    now: float  # the database's clock when they were read


@dataclass(frozen=True, slots=True)
class Status:
    waiting: int
    set_aside: int
    oldest_age: float | None  # seconds


class Source(Protocol):
    url: str

    async def open(self) -> None:
        """Connect, and create the outbox table if it is missing (``take`` does it too)."""
        ...

    async def take(self, limit: int) -> Taken:
        """The oldest ``limit`` rows not set aside (on PostgreSQL, locked until ``finish`` or
        ``release``: other relays skip them)."""
        ...

    async def finish(self, moved: Sequence[int], refused: dict[int, str]) -> None:
        """Delete the ``moved`` rows and set the ``refused`` ones aside with their error; one
        transaction."""
        ...

    async def release(self) -> None:
        """Give back what ``take`` holds without changing anything."""
        ...

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for new rows; True if told of some."""
        ...

    async def status(self) -> Status: ...

    async def close(self) -> None: ...


# Columns of ``relay__take`` before the database's clock.
_COLUMNS: Final = 11


def _row(values: Sequence[Any]) -> OutboxRow:
    (seq, id_, queue, name, payload, priority, max_attempts, run_at, delay, created_at, headers) = (
        values
    )
    return OutboxRow(
        int(seq),
        str(id_),
        str(queue),
        str(name),
        bytes(payload),
        int(priority),
        int(max_attempts),
        None if run_at is None else float(run_at),
        float(delay),
        float(created_at),
        headers,
    )


# -- PostgreSQL -----------------------------------------------------------------------------------


class PostgresSource:
    """Two connections: one for the batches (a transaction per batch, rows locked with ``FOR
    UPDATE SKIP LOCKED``), one in autocommit mode that ``LISTEN``\\ s for the producers'
    notifications."""

    def __init__(self, outbox: PostgresOutbox) -> None:
        import psycopg  # only the relay needs it; a missing extra fails here, at construction

        self._psycopg = psycopg
        self.outbox = outbox
        self.url = outbox.url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._errors: tuple[type[Exception], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            OSError,
        )

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            conn = await self._psycopg.AsyncConnection.connect(self.outbox.conninfo)
            try:
                await self.outbox.create_with_async(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _listening(self) -> psycopg.AsyncConnection[Any]:
        if self._listener is None:
            conn = await self._psycopg.AsyncConnection.connect(
                self.outbox.conninfo, autocommit=True
            )
            await conn.execute(self.outbox.queries["relay__listen"])
            self._listener = conn
        return self._listener

    async def _drop(self) -> None:
        for conn in (self._conn, self._listener):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._conn = self._listener = None

    async def open(self) -> None:
        try:
            await self._connection()
            await self._listening()
        except self._errors as exc:
            await self._drop()
            raise self._unavailable("connect", exc) from exc

    def _unavailable(self, operation: str, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"outbox {operation} on {self.url} failed: {exc}")

    async def take(self, limit: int) -> Taken:
        try:
            await self._listening()  # before reading: no notification can fall in between
            conn = await self._connection()
            cursor = await conn.execute(self.outbox.queries["relay__take"], {"limit": limit})
            rows = await cursor.fetchall()
        except self._errors as exc:
            await self._drop()
            raise self._unavailable("read", exc) from exc
        if not rows:
            await conn.rollback()
            return Taken([], 0.0)
        return Taken([_row(r[:_COLUMNS]) for r in rows], float(rows[0][_COLUMNS]))

    async def finish(self, moved: Sequence[int], refused: dict[int, str]) -> None:
        q = self.outbox.queries
        try:
            conn = await self._connection()
            if moved:
                await conn.execute(q["relay__delete"], {"seqs": list(moved)})
            if refused:
                params = {"seqs": list(refused), "errors": list(refused.values())}
                await conn.execute(q["relay__set_aside"], params)
            await conn.commit()
        except self._errors as exc:
            await self._drop()
            raise self._unavailable("delete", exc) from exc

    async def release(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.rollback()
            except Exception:
                await self._drop()

    async def wait(self, timeout: float) -> bool:
        try:
            listener = await self._listening()
            async for _ in listener.notifies(timeout=timeout, stop_after=1):
                return True
        except self._errors as exc:
            await self._drop()
            raise self._unavailable("listen", exc) from exc
        return False

    async def status(self) -> Status:
        try:
            conn = await self._connection()
            cursor = await conn.execute(self.outbox.queries["relay__status"])
            row = await cursor.fetchone()
            await conn.rollback()
        except self._errors as exc:
            await self._drop()
            raise self._unavailable("status", exc) from exc
        assert row is not None
        return Status(int(row[0]), int(row[1]), None if row[2] is None else float(row[2]))

    async def close(self) -> None:
        await self._drop()


# -- SQLite ---------------------------------------------------------------------------------------


class SQLiteSource:
    """One autocommit connection used from a worker thread; a plain read (SQLite has no row
    locks: two relays on one file would move the same rows twice, which Redis reports as
    duplicates, so it costs work, not jobs). The relay polls: nothing tells it of new rows."""

    def __init__(self, outbox: SQLiteOutbox) -> None:
        self.outbox = outbox
        self.url = outbox.url
        self._conn: sqlite3.Connection | None = None
        # One thread for the connection: a call abandoned by a cancelled task still finishes
        # before the next one starts.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conveyor-outbox")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.outbox.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            try:
                self.outbox.create_with(conn)
                mode = conn.execute("PRAGMA journal_mode").fetchone()
            except BaseException:
                conn.close()
                raise
            if mode and str(mode[0]).lower() != "wal":
                log.warning(
                    "%s is in journal mode %s: the relay's reads wait for the application's "
                    "writes and can fall far behind under load; PRAGMA journal_mode=WAL "
                    "lets them run side by side",
                    self.outbox.path,
                    mode[0],
                    extra={"event": "setup"},
                )
            self._conn = conn
        return self._conn

    async def _run(self, operation: str, work: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work)
        except sqlite3.Error as exc:
            self._drop()
            raise BackendUnavailable(f"outbox {operation} on {self.url} failed: {exc}") from exc

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    async def open(self) -> None:
        await self._run("connect", self._connection)

    async def take(self, limit: int) -> Taken:
        def read() -> Taken:
            rows = self._connection().execute(self.outbox.queries["relay__take"], {"limit": limit})
            found = rows.fetchall()
            if not found:
                return Taken([], 0.0)
            return Taken([_row(r[:_COLUMNS]) for r in found], float(found[0][_COLUMNS]))

        taken: Taken = await self._run("read", read)
        return taken

    async def finish(self, moved: Sequence[int], refused: dict[int, str]) -> None:
        q = self.outbox.queries

        def write() -> None:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")  # inside: an exception as it returns rolls it back
                if moved:
                    conn.execute(q["relay__delete"], {"seqs": json.dumps(list(moved))})
                for seq, error in refused.items():
                    conn.execute(q["relay__set_aside"], {"seq": seq, "error": error})
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run("delete", write)

    async def release(self) -> None:
        return None

    async def wait(self, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False

    async def status(self) -> Status:
        def read() -> Status:
            row = self._connection().execute(self.outbox.queries["relay__status"]).fetchone()
            return Status(int(row[0]), int(row[1]), None if row[2] is None else float(row[2]))

        status: Status = await self._run("status", read)
        return status

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._drop)
        self._thread.shutdown(wait=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conveyor-outbox")


def source_for(outbox: PostgresOutbox | SQLiteOutbox) -> Source:
    if isinstance(outbox, PostgresOutbox):
        return PostgresSource(outbox)
    return SQLiteSource(outbox)
