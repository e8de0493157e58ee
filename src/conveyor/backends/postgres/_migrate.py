"""Schema migrations of the PostgreSQL backend: forward only, each applied once, under an
advisory lock, so that any number of processes starting at once on an empty database apply
each migration exactly once (the others wait for the lock and find nothing left to do)."""

from __future__ import annotations

from typing import Any, cast

from psycopg import AsyncConnection

from conveyor._errors import BackendUnavailable, MigrationRequired
from conveyor.backends.postgres._sql import MIGRATIONS, in_schema

KNOWN = tuple(name for name, _ in MIGRATIONS)


async def migrate(conn: AsyncConnection[Any], schema: str, quoted: str) -> list[str]:
    """Apply the pending migrations in one transaction; return the names applied."""
    async with conn.transaction():
        await conn.execute(
            b"SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"conveyor:{schema}"]
        )
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}".encode())
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted}.conveyor_migration ("
            "name text NOT NULL PRIMARY KEY, applied_at double precision NOT NULL)".encode()
        )
        applied = await _applied(conn, quoted)
        _refuse_newer(applied, schema)
        done: list[str] = []
        for name, script in MIGRATIONS:
            if name in applied:
                continue
            await conn.execute(in_schema(script, quoted).encode(), prepare=False)
            await conn.execute(
                f"INSERT INTO {quoted}.conveyor_migration (name, applied_at) "
                "VALUES (%s, extract(epoch FROM now()))".encode(),
                [name],
            )
            done.append(name)
        return done


async def check_current(conn: AsyncConnection[Any], schema: str, quoted: str, shown: str) -> None:
    """For a caller that must not create anything: the schema exists and is this code's."""
    cur = await conn.execute(
        b"SELECT to_regclass(%s) IS NOT NULL", [f"{quoted}.conveyor_migration"]
    )
    row: Any = await cur.fetchone()
    if row is None or not _first(row):
        raise BackendUnavailable(
            f"no Conveyor tables in schema {schema!r} at {shown}: nothing was ever enqueued "
            "there (check the URL and its ?schema=), or run `conveyor migrate`"
        )
    applied = await _applied(conn, quoted)
    _refuse_newer(applied, schema)
    missing = [name for name in KNOWN if name not in applied]
    if missing:
        raise MigrationRequired(
            f"schema {schema!r} at {shown} lacks migrations {', '.join(missing)}: "
            "run `conveyor migrate` (or start a worker, which applies them)"
        )


async def _applied(conn: AsyncConnection[Any], quoted: str) -> set[str]:
    cur = await conn.execute(f"SELECT name FROM {quoted}.conveyor_migration".encode())
    rows: list[Any] = await cur.fetchall()
    return {str(_first(row)) for row in rows}


def _first(row: Any) -> object:
    # A row of the pool's dict rows, or of a plain connection's tuples.
    values: list[object] = (
        list(cast("dict[str, object]", row).values()) if isinstance(row, dict) else list(row)
    )
    return values[0]


def _refuse_newer(applied: set[str], schema: str) -> None:
    unknown = sorted(applied - set(KNOWN))
    if unknown:
        raise MigrationRequired(
            f"schema {schema!r} was migrated by a newer Conveyor (it has {', '.join(unknown)}, "
            f"this version knows up to {KNOWN[-1]}): upgrade Conveyor here"
        )
