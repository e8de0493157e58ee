"""Adapters of the caller's own database connections, for ``enqueue(..., connection=conn)``.

A :class:`~conveyor.drivers.transactional.TransactionalWriter` describes an insert as a plan of
statements; an adapter runs them on the caller's connection, in the caller's thread or
coroutine, inside the caller's transaction. Supported:

* ``sqlite3.Connection`` (sync);
* psycopg 3 ``psycopg.Connection`` (sync) and ``psycopg.AsyncConnection`` (async);
* SQLAlchemy 2 ``Session``, ``Connection``, ``scoped_session`` (sync) and ``AsyncSession``,
  ``AsyncConnection``, ``async_scoped_session`` (async), on the sqlite3 (pysqlite), aiosqlite
  or psycopg driver: the statements run on the DBAPI connection of the current transaction,
  which is begun first if it is not yet;
* ``aiosqlite.Connection`` (async), whose statements run in its own thread, as all of its do.

Types are recognised without importing optional packages: a psycopg connection can only exist
if ``psycopg`` was imported already, so the classes are looked up in :data:`sys.modules`.

Every check (the type, the dialect, a connection that would commit each statement at once)
runs before the first statement, so a refused connection has had nothing written on it.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from conveyor._errors import InvalidArgument
from conveyor.drivers.transactional import Dialect, Row, Statement

SUPPORTED = (
    "sqlite3.Connection, aiosqlite.Connection, psycopg.Connection, psycopg.AsyncConnection, and "
    "SQLAlchemy Session, Connection, AsyncSession or AsyncConnection on sqlite3, aiosqlite or "
    "psycopg"
)


@dataclass(frozen=True, slots=True)
class SyncAdapter:
    """Runs statements on a blocking connection, in the calling thread."""

    dialect: Dialect
    execute: Callable[[Statement], list[Row]]


@dataclass(frozen=True, slots=True)
class AsyncAdapter:
    """Runs statements on an asyncio connection, in the calling coroutine."""

    dialect: Dialect
    execute: Callable[[Statement], Awaitable[list[Row]]]


def adapt_sync(connection: object, dialect: Dialect, target: str) -> SyncAdapter:
    """The adapter of a blocking ``connection`` that writes into ``target`` (a queue or an
    outbox, named in messages) in ``dialect``; :class:`InvalidArgument` if it cannot."""
    conn: Any = connection
    if _is_instance(conn, "sqlalchemy.orm", "scoped_session"):
        conn = conn()  # the session of this thread
    if _is_instance(conn, "sqlalchemy.orm", "Session"):
        return _sqlalchemy_sync(conn.connection(), "a SQLAlchemy Session", dialect, target)
    if _is_instance(conn, "sqlalchemy.engine", "Connection"):
        return _sqlalchemy_sync(conn, "a SQLAlchemy Connection", dialect, target)
    kind = _async_kind(conn)
    if kind is not None:
        raise InvalidArgument(
            f"connection= is {kind}, which only async code can use: pass it "
            "to the async Queue (await queue.enqueue(..., connection=conn)); SyncQueue takes "
            "blocking connections (sqlite3, psycopg.Connection, SQLAlchemy Session)"
        )
    return _dbapi(conn, "", dialect, target)


async def adapt(connection: object, dialect: Dialect, target: str) -> SyncAdapter | AsyncAdapter:
    """The adapter of ``connection``, blocking or async, for async code. A blocking one runs
    its statements in the event loop's thread, which is the thread that owns it (a few
    statements, each as quick as any other query of the caller's on that connection)."""
    conn: Any = connection
    if _is_instance(conn, "sqlalchemy.ext.asyncio", "async_scoped_session"):
        conn = conn()  # the session of this task
    if _is_instance(conn, "sqlalchemy.ext.asyncio", "AsyncSession"):
        sa_connection = await conn.connection()
        return await _sqlalchemy_async(sa_connection, "a SQLAlchemy AsyncSession", dialect, target)
    if _is_instance(conn, "sqlalchemy.ext.asyncio", "AsyncConnection"):
        return await _sqlalchemy_async(conn, "a SQLAlchemy AsyncConnection", dialect, target)
    if _is_instance(conn, "psycopg", "AsyncConnection"):
        return _psycopg_async(conn, "a psycopg AsyncConnection", dialect, target)
    if _is_instance(conn, "aiosqlite", "Connection"):
        return _aiosqlite(conn, "an aiosqlite connection", dialect, target)
    return adapt_sync(conn, dialect, target)


# -- DBAPI connections ---------------------------------------------------------------------


def _dbapi(connection: Any, through: str, dialect: Dialect, target: str) -> SyncAdapter:
    """A blocking DBAPI connection: sqlite3 or psycopg (``through`` names the SQLAlchemy object
    it came from, for messages)."""
    if isinstance(connection, sqlite3.Connection):
        what = f"{through}a sqlite3 connection"
        _check_dialect(what, "sqlite", dialect, target)
        _check_sqlite_transaction(connection, what)
        return SyncAdapter("sqlite", lambda s: _sqlite_execute(connection, s))
    if _is_instance(connection, "psycopg", "Connection"):
        what = f"{through}a psycopg connection"
        _check_dialect(what, "postgresql", dialect, target)
        _check_psycopg_transaction(connection, what, "with conn.transaction():")
        rows = sys.modules["psycopg.rows"]

        def execute(statement: Statement) -> list[Row]:
            with connection.cursor(row_factory=rows.tuple_row) as cursor:
                cursor.execute(statement.sql, statement.params)
                return list(cursor.fetchall()) if cursor.description else []

        return SyncAdapter("postgresql", execute)
    if through:
        raise InvalidArgument(
            f"connection= is {through.removesuffix(' on ')} whose database driver is "
            f"{_type_name(connection)}, which Conveyor cannot write with; connection= takes "
            "SQLAlchemy engines on sqlite3 (sqlite://) or psycopg 3 (postgresql+psycopg://)"
        )
    raise InvalidArgument(
        f"connection= got a {_type_name(connection)}, which Conveyor cannot write with; "
        f"supported: {SUPPORTED}"
    )


def _sqlite_execute(connection: sqlite3.Connection, statement: Statement) -> list[Row]:
    cursor = connection.cursor()
    try:
        cursor.row_factory = None  # plain tuples, whatever the caller's row factory is
        cursor.execute(statement.sql, statement.params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _psycopg_async(connection: Any, what: str, dialect: Dialect, target: str) -> AsyncAdapter:
    _check_dialect(what, "postgresql", dialect, target)
    _check_psycopg_transaction(connection, what, "async with conn.transaction():")
    rows = sys.modules["psycopg.rows"]

    async def execute(statement: Statement) -> list[Row]:
        async with connection.cursor(row_factory=rows.tuple_row) as cursor:
            await cursor.execute(statement.sql, statement.params)
            return list(await cursor.fetchall()) if cursor.description else []

    return AsyncAdapter("postgresql", execute)


def _aiosqlite(connection: Any, what: str, dialect: Dialect, target: str) -> AsyncAdapter:
    _check_dialect(what, "sqlite", dialect, target)
    # aiosqlite has no autocommit attribute of its own: isolation_level None is autocommit.
    if not connection.in_transaction and connection.isolation_level is None:
        raise InvalidArgument(
            f"connection= is {what} in autocommit mode outside a transaction, so the job "
            "would be committed at once, not with your transaction: open one first (await "
            'conn.execute("BEGIN") ... await conn.commit()), or use a connection in the default '
            "transaction mode"
        )

    async def execute(statement: Statement) -> list[Row]:
        cursor = await connection.cursor()
        try:
            cursor.row_factory = None  # plain tuples, whatever the caller's row factory is
            await cursor.execute(statement.sql, statement.params)
            return list(await cursor.fetchall())
        finally:
            await cursor.close()

    return AsyncAdapter("sqlite", execute)


# -- SQLAlchemy ----------------------------------------------------------------------------


def _sqlalchemy_sync(sa_connection: Any, what: str, dialect: Dialect, target: str) -> SyncAdapter:
    adapter = _dbapi(sa_connection.connection.dbapi_connection, f"{what} on ", dialect, target)
    if not sa_connection.in_transaction():
        # What SQLAlchemy's own first statement would do ("autobegin"), so that the caller's
        # conn.commit() commits the job too.
        sa_connection.begin()
    return adapter


async def _sqlalchemy_async(
    sa_connection: Any, what: str, dialect: Dialect, target: str
) -> AsyncAdapter:
    raw = await sa_connection.get_raw_connection()
    driver = raw.driver_connection
    adapter: AsyncAdapter
    if _is_instance(driver, "psycopg", "AsyncConnection"):
        adapter = _psycopg_async(driver, f"{what} on a psycopg connection", dialect, target)
    elif _is_instance(driver, "aiosqlite", "Connection"):
        adapter = _aiosqlite(driver, f"{what} on an aiosqlite connection", dialect, target)
    else:
        raise InvalidArgument(
            f"connection= is {what} whose database driver is {_type_name(driver)}, which "
            "Conveyor cannot write with; async SQLAlchemy engines must use psycopg 3 "
            "(postgresql+psycopg://) or aiosqlite (sqlite+aiosqlite://)"
        )
    if not sa_connection.in_transaction():
        await sa_connection.begin()
    return adapter


# -- checks --------------------------------------------------------------------------------


def _check_dialect(what: str, has: Dialect, wants: Dialect, target: str) -> None:
    if has != wants:
        raise InvalidArgument(
            f"connection= is {what}, which cannot write to {target}, a {wants} database: pass "
            f"a connection to that database (or use a queue on a {has} database)"
        )


def _check_sqlite_transaction(connection: sqlite3.Connection, what: str) -> None:
    # Python 3.12+: autocommit is True, False (PEP 249: always in a transaction) or the legacy
    # mode (-1), where isolation_level None means autocommit.
    autocommit = getattr(connection, "autocommit", -1)
    if autocommit is False or connection.in_transaction:
        return
    if autocommit is True or connection.isolation_level is None:
        raise InvalidArgument(
            f"connection= is {what} in autocommit mode outside a transaction, so the job "
            "would be committed at once, not with your transaction: open one first "
            '(conn.execute("BEGIN") ... conn.commit()), or use a connection in the default '
            "transaction mode"
        )


def _check_psycopg_transaction(connection: Any, what: str, how: str) -> None:
    idle = sys.modules["psycopg.pq"].TransactionStatus.IDLE
    if connection.autocommit and connection.info.transaction_status == idle:
        raise InvalidArgument(
            f"connection= is {what} in autocommit mode outside a transaction, so the job "
            f"would be committed at once, not with your transaction: enqueue inside `{how}` "
            "or use a connection with autocommit=False"
        )


def _async_kind(connection: object) -> str | None:
    if _is_instance(connection, "psycopg", "AsyncConnection"):
        return "a psycopg AsyncConnection"
    if _is_instance(connection, "aiosqlite", "Connection"):
        return "an aiosqlite connection"
    for name in ("AsyncSession", "AsyncConnection", "async_scoped_session"):
        if _is_instance(connection, "sqlalchemy.ext.asyncio", name):
            return f"a SQLAlchemy {name}"
    return None


def _is_instance(value: object, module: str, name: str) -> bool:
    """``isinstance(value, module.name)``, false without importing ``module`` when it is not
    imported yet (then no such value can exist)."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(value, cls)


def _type_name(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"
