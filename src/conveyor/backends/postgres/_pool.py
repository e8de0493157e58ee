"""The PostgreSQL driver's connections: a psycopg pool of autocommit connections (each statement
its own transaction, one round trip), and the loop that rides through a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from conveyor.backends.postgres._records import Row

T = TypeVar("T")

POOL_TIMEOUT_SECONDS = 5.0  # how long an operation waits for a connection before failing
# An operation whose connection fails is tried again, pausing 0.05 s, then twice as long each
# time up to 1 s, for RETRY_SECONDS in all (waits for a connection included): a server being
# away that long (a restart) costs a pause; longer, the caller sees BackendUnavailable.
RETRY_SECONDS = 5.0
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 1.0
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)


async def fetch_rows(conn: Any, sql: bytes, args: Mapping[str, Any]) -> list[Row]:
    """Run one statement on ``conn``; its rows, or none for a statement that returns none."""
    cur = await conn.execute(sql, args)
    rows: list[Row] = await cur.fetchall() if cur.description is not None else []
    return rows


class Connections:
    def __init__(self, conninfo: str, *, max_size: int, name: str) -> None:
        self._pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            timeout=POOL_TIMEOUT_SECONDS,
            open=False,
            name=name,
        )
        self._check: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        await self._pool.open(wait=False)
        self._closed = False
        self._guard = asyncio.get_running_loop().create_task(
            self._close_at_loop_end(), name="conveyor-postgres-pool-guard"
        )

    async def close(self) -> None:
        self._closed = True
        await self._pool.close()
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    async def _close_at_loop_end(self) -> None:
        """Close the pool when this task is cancelled without ``close()``: that is how
        ``asyncio.run`` ends a program that never closed its queue. The pool's maintenance
        tasks swallow a cancellation that arrives while they connect (they retry instead), so
        without a close the loop's final wait for its cancelled tasks could never end."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not self._closed:
                self._closed = True
                await self._pool.close(timeout=POOL_TIMEOUT_SECONDS)
            raise

    def connection(self) -> Any:
        return self._pool.connection()

    async def rows(self, sql: bytes, args: Mapping[str, Any]) -> list[Row]:
        async def run(conn: Any, retried: bool) -> list[Row]:
            return await fetch_rows(conn, sql, args)

        return await self.with_connection(run)

    async def with_connection(self, work: Callable[[Any, bool], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection. A connection that fails (the server restarted,
        the network dropped) is replaced and the work tried again, within RETRY_SECONDS in
        all, which lets workers and producers ride through a restart. ``work`` is told when it
        runs again: the first try may have committed with only its reply lost, and what is
        not safe to repeat as such (a fetch, an insert's report) looks for that first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_SECONDS
        retried = False
        delay = RETRY_FIRST_DELAY
        while True:
            try:
                wait = max(deadline - loop.time(), RETRY_FIRST_DELAY)
                async with self._pool.connection(timeout=wait) as conn:
                    return await work(conn, retried)
            except CONNECTION_ERRORS:
                self._weed_out()
                if loop.time() + delay >= deadline:
                    raise
            retried = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    def _weed_out(self) -> None:
        """After a connection failed (a server restart), check the pool's other idle
        connections in the background, so the next operations get live ones."""
        if self._check is not None and not self._check.done():
            return
        self._check = asyncio.get_running_loop().create_task(self._check_idle())

    async def _check_idle(self) -> None:
        try:
            await self._pool.check()
        except Exception:  # the next operation reports the outage
            pass
