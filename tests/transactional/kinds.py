"""The kinds of PostgreSQL connections an application can pass as ``connection=``, each able to
open one and drive its transaction the way that library does."""

from __future__ import annotations

from typing import Any, Protocol

import psycopg


class Kind(Protocol):
    """Opens a connection of one kind and drives its transaction."""

    async def open(self) -> Any: ...
    async def execute(self, conn: Any, sql: str) -> None: ...
    async def commit(self, conn: Any) -> None: ...
    async def rollback(self, conn: Any) -> None: ...
    async def close(self, conn: Any) -> None: ...


class PsycopgSync:
    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> Any:
        return psycopg.connect(self.url)

    async def execute(self, conn: Any, sql: str) -> None:
        conn.execute(sql)

    async def commit(self, conn: Any) -> None:
        conn.commit()

    async def rollback(self, conn: Any) -> None:
        conn.rollback()

    async def close(self, conn: Any) -> None:
        conn.close()


class PsycopgAsync:
    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> Any:
        return await psycopg.AsyncConnection.connect(self.url)

    async def execute(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    async def close(self, conn: Any) -> None:
        await conn.close()


class SQLAlchemySync:
    def __init__(self, url: str, *, session: bool) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.session = session

    async def open(self) -> Any:
        from sqlalchemy.orm import Session

        return Session(self.engine) if self.session else self.engine.connect()

    async def execute(self, conn: Any, sql: str) -> None:
        from sqlalchemy import text

        conn.execute(text(sql))

    async def commit(self, conn: Any) -> None:
        conn.commit()

    async def rollback(self, conn: Any) -> None:
        conn.rollback()

    async def close(self, conn: Any) -> None:
        conn.close()
        self.engine.dispose()


class SQLAlchemyAsync:
    def __init__(self, url: str, *, session: bool) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.session = session

    async def open(self) -> Any:
        from sqlalchemy.ext.asyncio import AsyncSession

        return AsyncSession(self.engine) if self.session else await self.engine.connect()

    async def execute(self, conn: Any, sql: str) -> None:
        from sqlalchemy import text

        await conn.execute(text(sql))

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    async def close(self, conn: Any) -> None:
        await conn.close()
        await self.engine.dispose()


KINDS = [
    "psycopg",
    "psycopg-async",
    "sqlalchemy-session",
    "sqlalchemy-connection",
    "sqlalchemy-async-session",
    "sqlalchemy-async-connection",
]


def make_kind(name: str, url: str) -> Kind:
    match name:
        case "psycopg":
            return PsycopgSync(url)
        case "psycopg-async":
            return PsycopgAsync(url)
        case "sqlalchemy-session" | "sqlalchemy-connection":
            return SQLAlchemySync(url, session=name.endswith("session"))
        case _:
            return SQLAlchemyAsync(url, session=name.endswith("session"))
