"""One SQLite connection owned by one thread, and the schema migrations applied through it.

sqlite3 blocks, so every statement of a driver runs on a dedicated single-thread executor that
also owns the connection; the event loop only awaits futures. Write steps run inside
``BEGIN IMMEDIATE`` so they take the database's write lock up front (waiting up to the busy
timeout) instead of failing half way through when another process writes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from conveyor._errors import BackendError, BackendUnavailable, MigrationRequired
from conveyor.backends.sqlite import _lockstats
from conveyor.backends.sqlite._sql import MIGRATIONS, QUERIES, split_statements

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS: Final = 10.0
BUSY_TIMEOUT_MS: Final = int(BUSY_TIMEOUT_SECONDS * 1000)
_HERE_LOCK: Final = threading.Lock()


class Connection:
    """A lazily opened connection to ``path`` and the thread that alone may use it."""

    def __init__(self, path: str, *, synchronous: str = "normal") -> None:
        self.path = path
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._here: threading.Lock | None = None  # set when callers' threads use it
        self._here_pid = 0

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    async def open(self) -> list[str]:
        """Connect, configure and migrate; return the migrations this applied."""
        if self._executor is not None:
            return []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conveyor-sqlite")
        try:
            return await self.run(self._connect)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        _lockstats.dump()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    async def run(self, step: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``step`` on the connection's thread, outside any transaction."""
        if self._executor is None:
            raise RuntimeError(f"the SQLite driver for {self.path} is not open; call open() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, step)

    async def write(self, step: Callable[[sqlite3.Connection], T], *, kind: str = "write") -> T:
        """Run ``step`` as one ``BEGIN IMMEDIATE`` transaction: all of it or nothing. ``kind``
        names the write in the lock statistics (see :mod:`._lockstats`)."""
        return await self.run(lambda conn: transaction(conn, step, kind=kind))

    async def read(self, step: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``step`` in one read transaction, so its statements see one snapshot."""
        return await self.run(lambda conn: transaction(conn, step, begin="BEGIN"))

    def write_here(self, step: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`write` in the calling thread, blocking it: for a Connection used only this way
        (never opened), whose sqlite3 connection the calling threads share one at a time. The
        schema must exist already (an opened driver on the same file made it)."""
        return self.run_here(
            lambda conn: with_busy_timeout(conn, lambda c: transaction(c, step, kind="insert"))
        )

    def run_here(self, step: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`write_here` without the ``BEGIN IMMEDIATE``: for one statement, which is a
        transaction of its own. Between calls this connection's busy timeout is 0, so that a
        single insert tries :func:`in_short_waits` first without a statement to change it;
        ``step`` waits for the lock only through one of those two functions."""
        if self._here is None:
            with _HERE_LOCK:
                if self._here is None:
                    self._here = threading.Lock()
        with self._here:
            if self._conn is not None and self._here_pid != os.getpid():
                # SQLite must not use a connection across fork(): a forked child (a preloading
                # web server's worker) leaves the parent's alone and opens its own.
                self._conn = None
            if self._conn is None:
                self._here_pid = os.getpid()
                conn = self._open_connection(any_thread=True)
                try:
                    self._configure(conn)
                    conn.execute("PRAGMA busy_timeout = 0")
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            return self._guarded(step)

    def close_here(self) -> None:
        """Close what :meth:`write_here` opened."""
        if self._here is not None:
            with self._here:
                self._disconnect()
        _lockstats.dump()

    def _guarded(self, step: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._open_connection()
        try:
            return step(self._conn)
        except sqlite3.OperationalError as exc:
            if not _is_infrastructure(exc):
                raise BackendError(f"SQLite database {self.path}: {exc}") from exc
            raise self._unavailable(exc) from exc
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
                raise
            raise self._unavailable(exc) from exc  # e.g. "file is not a database"

    def _unavailable(self, exc: sqlite3.Error) -> BackendUnavailable:
        hint = ""
        if "locked" in str(exc) or "busy" in str(exc):
            hint = f" (another process held the write lock for over {BUSY_TIMEOUT_SECONDS:g}s)"
        return BackendUnavailable(f"SQLite database {self.path}: {exc}{hint}")

    def _open_connection(self, *, any_thread: bool = False) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise BackendUnavailable(
                f"cannot open SQLite database {self.path}: directory {directory} does not exist; "
                "create it first or point the URL at an existing directory"
            )
        try:
            # isolation_level=None: the driver issues BEGIN/COMMIT itself, sqlite3 adds none.
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=not any_thread,
            )
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _connect(self, conn: sqlite3.Connection) -> list[str]:
        self._configure(conn)
        return migrate(conn, self.path)

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if conn.execute("PRAGMA page_count").fetchall()[0][0] == 0:
            # A new file: pages freed by deleted jobs can then be handed back to the file system
            # (maintenance does it a bounded step at a time, see vacuum_step), so a file that
            # churns jobs stays near the size of its largest backlog. Only takes effect before
            # the first table, and before the switch to WAL, which writes the file's header.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        _enable_wal(conn)
        # NORMAL (the default) is durable in WAL mode except for the last commits before a power
        # loss or OS crash, and avoids an fsync per job transition; FULL fsyncs every commit.
        conn.execute(
            "PRAGMA synchronous = FULL"
            if self.synchronous == "full"
            else "PRAGMA synchronous = NORMAL"
        )

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


# What an OperationalError says when the file, the disk or another process is in the way, and
# trying again later can succeed. Anything else (a malformed JSON value, a value too big) is
# about the data: retrying the same statement would fail the same way for ever.
_INFRASTRUCTURE = (
    "locked",
    "busy",
    "disk i/o",
    "unable to open",
    "readonly",
    "read-only",
    "is full",
    "interrupted",
    "no such table",
    "not a database",
    "malformed",
)


def _is_infrastructure(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    if "json" in text:
        return False
    return any(words in text for words in _INFRASTRUCTURE)


def transaction(
    conn: sqlite3.Connection,
    step: Callable[[sqlite3.Connection], T],
    *,
    begin: str = "BEGIN IMMEDIATE",
    kind: str = "write",
) -> T:
    timed = _lockstats.enabled() and begin != "BEGIN"
    asked = time.perf_counter() if timed else 0.0
    try:
        # BEGIN inside the try: an exception raised the moment it returns (a signal handler's,
        # KeyboardInterrupt) must not leave the transaction, and the write lock, open.
        conn.execute(begin)
        held = time.perf_counter() if timed else 0.0
        result = step(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if timed:
        _lockstats.record(kind, held - asked, time.perf_counter() - held)
    return result


# Free pages a file keeps for reuse before maintenance gives any back: the larger of this and a
# quarter of the pages in use. Giving back moves pages from the end of the file into free
# slots, so each step is bounded: at most VACUUM_STEP_PAGES pages per maintenance tick.
VACUUM_KEEP_FREE_PAGES: Final = 256
VACUUM_STEP_PAGES: Final = 128


def vacuum_surplus(conn: sqlite3.Connection) -> int:
    """How many free pages the next bounded step should give back to the file system: those
    beyond what the file keeps for reuse, at most :data:`VACUUM_STEP_PAGES`. Read without the
    write lock (three header fields). A file made before auto-vacuum was turned on (``PRAGMA
    auto_vacuum`` is 0) reuses its free pages but cannot give them back: always 0."""
    if conn.execute("PRAGMA auto_vacuum").fetchall()[0][0] != 2:
        return 0
    free: int = conn.execute("PRAGMA freelist_count").fetchall()[0][0]
    used: int = conn.execute("PRAGMA page_count").fetchall()[0][0] - free
    surplus = free - max(VACUUM_KEEP_FREE_PAGES, used // 4)
    return max(0, min(surplus, VACUUM_STEP_PAGES))


def vacuum_step(conn: sqlite3.Connection, pages: int) -> None:
    """Give ``pages`` free pages back (fewer if fewer are free); run in a write transaction."""
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()


def one_statement(
    conn: sqlite3.Connection, step: Callable[[sqlite3.Connection], T], kind: str
) -> T:
    """Run ``step``, which executes exactly one write statement that returns no rows, as its
    own transaction (autocommit): SQLite takes the write lock, changes and commits inside that
    one statement's step, during which this thread does not hold the GIL. In a ``BEGIN
    IMMEDIATE`` transaction the lock is also held while the thread takes the GIL back after
    BEGIN and after the statement, each up to the interpreter's switch interval when other
    threads of the process (the event loop running handlers) hold it. Waiting for the lock is
    the same: the statement waits in the busy handler, as ``BEGIN IMMEDIATE`` does."""
    asked = time.perf_counter() if _lockstats.enabled() else 0.0
    result = step(conn)
    if asked:
        # Waiting and holding are one step here: the whole of it is recorded as held.
        _lockstats.record(kind, 0.0, time.perf_counter() - asked)
    return result


# The pauses after which a single insert that found the write lock taken tries again, before it
# waits in SQLite's busy handler for the rest of the busy timeout. That handler sleeps 1, 2, 5,
# 10, 15, 20, 25... ms between looks and looks only then: a lock held for 1.1 ms costs a waiter
# 3 ms, and a waiter that finds the lock taken again at each look falls behind by whole steps,
# up to 100 ms each (4 producers with 2 workers on the file: p99.9 60 ms, worst call 434 ms).
#
# SHORT_WAITS serve the database thread of an async queue, whose event loop runs on meanwhile:
# measured with 4 producers and 2 workers, p99 11 -> 6.7 ms, p99.9 60 -> 14 ms, worst 434 -> 37
# ms, producers' rate unchanged (1 ms pauses instead: p99 9.5 ms, rate 13 % lower).
# CALLER_WAITS serve a SyncQueue caller's thread, which is the producer itself: sub-millisecond
# pauses cost such producers a quarter of their rate (4 sync producers: 8.1k/s with the busy
# handler, 6.0k/s with SHORT_WAITS), 1 ms pauses nothing (8.1k/s, worst call 180 -> 20 ms).
# Either looks for about 100 ms before the busy handler: at synchronous=full each holder keeps
# the lock through an fsync, and 10 ms of looks still left callers to the handler's long steps
# (4 producers: worst call 0.2-1.2 s; with 100 ms of looks 21-57 ms, for 7-17 % of their rate).
SHORT_WAITS: Final = (0.00005, 0.0001, 0.0002) + (0.0004,) * 249
CALLER_WAITS: Final = (0.001,) * 100


def in_short_waits(
    conn: sqlite3.Connection,
    statement: Callable[[sqlite3.Connection], T],
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    pauses: tuple[float, ...] = SHORT_WAITS,
) -> T:
    """Run ``statement``, one statement that is a transaction of its own (a try that found the
    lock taken wrote nothing), trying again after each of ``pauses`` while SQLite answers busy,
    then once more waiting in the busy handler. ``busy_timeout_ms`` is the connection's busy
    timeout when called, and it is that again on return; a connection kept at 0 runs no
    statement to change it unless the lock is taken. ``time.sleep`` lets the GIL go, so the
    process's other threads run meanwhile. Any other error is raised at once."""
    # ``changed`` is set before each PRAGMA that changes the timeout: an exception raised the
    # moment one returns (a signal handler's) still sets it back. Setting it back twice is
    # harmless; a caller's connection left at 10 s would make each of its next tries wait in
    # the busy handler.
    changed = False
    try:
        if busy_timeout_ms:
            changed = True
            conn.execute("PRAGMA busy_timeout = 0")
        for pause in pauses:
            try:
                return statement(conn)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
            time.sleep(pause)
        changed = True
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return statement(conn)
    finally:
        if changed:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")


def with_busy_timeout(conn: sqlite3.Connection, step: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``step`` on a connection kept at busy timeout 0 (see :meth:`Connection.run_here`)
    with the usual busy timeout, and set it back to 0 afterwards."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return step(conn)
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Reading the mode takes no lock that a writer holds, so a file already in WAL opens while
    # another connection is inside a write transaction (an app's own, enqueueing in it).
    if str(conn.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() == "wal":
        return
    # Switching a fresh file to WAL needs an exclusive lock that SQLite does not wait for with
    # the busy handler, so processes opening the same new file at once retry for a while.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def migrate(conn: sqlite3.Connection, path: str) -> list[str]:
    """Apply the bundled migrations the database lacks, under the write lock; return their names.

    Holding ``BEGIN IMMEDIATE`` from the check to the last migration means two processes opening
    a new file at once cannot both apply a migration: the second waits, then finds it applied.
    A file that has every migration is only read, without the write lock, so it opens while
    another connection is inside a write transaction.
    """
    if _up_to_date(conn):
        return []

    def apply(conn: sqlite3.Connection) -> list[str]:
        conn.execute(QUERIES["migration__create_table"])
        applied = {row["name"] for row in conn.execute(QUERIES["migration__applied"])}
        known = {name for name, _ in MIGRATIONS}
        unknown = sorted(applied - known)
        if unknown:
            raise MigrationRequired(
                f"SQLite database {path} has schema migration(s) {', '.join(unknown)} that this "
                f"version of conveyor does not know (it knows up to {max(known)}); upgrade "
                "conveyor in this process or point it at another database"
            )
        done: list[str] = []
        for name, script in MIGRATIONS:
            if name in applied:
                continue
            for statement in split_statements(script):
                conn.execute(statement)
            conn.execute(QUERIES["migration__record"], {"name": name, "now": time.time()})
            done.append(name)
        return done

    return transaction(conn, apply)


def _up_to_date(conn: sqlite3.Connection) -> bool:
    try:
        applied = {row[0] for row in conn.execute(QUERIES["migration__applied"]).fetchall()}
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False  # a new file
        raise
    return applied == {name for name, _ in MIGRATIONS}
