"""Fixtures of the outbox tests: an outbox in a SQLite file or in a PostgreSQL schema of its own,
a Redis key prefix of its own, and ways to run a plan on each kind of connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conveyor.drivers.transactional import Row, Statement
from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    return redis_test_url(redis_base_url)


@pytest.fixture
def pg_url(postgres_base_url: str) -> Iterator[str]:
    url = postgres_test_url(postgres_base_url)
    yield url
    drop_test_schema(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


def sqlite_execute(conn: Any) -> Any:
    def execute(statement: Statement) -> list[Row]:
        return list(conn.execute(statement.sql, statement.params).fetchall())

    return execute


def psycopg_execute(conn: psycopg.Connection[Any]) -> Any:
    def execute(statement: Statement) -> list[Row]:
        cursor = conn.execute(statement.sql.encode(), statement.params)
        return list(cursor.fetchall()) if cursor.description else []

    return execute


def psycopg_execute_async(conn: psycopg.AsyncConnection[Any]) -> Any:
    async def execute(statement: Statement) -> list[Row]:
        cursor = await conn.execute(statement.sql.encode(), statement.params)
        return list(await cursor.fetchall()) if cursor.description else []

    return execute


def base_conninfo(url: str) -> str:
    """A PostgreSQL URL without the ``schema`` option (psycopg does not know it)."""
    base, _, query = url.partition("?")
    rest = "&".join(p for p in query.split("&") if p and not p.startswith("schema="))
    return f"{base}?{rest}" if rest else base
