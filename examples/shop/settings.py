"""Configuration from the environment, read the same way by the API and the worker.

One database holds the shop's tables and the job queue, so that an endpoint writes its row and
its job in one transaction: ``SHOP_DATABASE_URL`` is a Conveyor URL (``sqlite:///shop.db`` or
``postgresql://user@host/db?schema=shop``) and SQLAlchemy is pointed at the same database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    smtp_host: str
    smtp_port: int
    mail_from: str
    # How often expired login sessions are deleted; the example runs it every second.
    session_cleanup_every: timedelta
    dashboard_token: str | None  # None: the dashboard at /jobs/ serves loopback clients only

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("SHOP_DATABASE_URL", "sqlite:///shop.db"),
            smtp_host=os.environ.get("SHOP_SMTP_HOST", "127.0.0.1"),
            smtp_port=int(os.environ.get("SHOP_SMTP_PORT", "8025")),
            mail_from=os.environ.get("SHOP_MAIL_FROM", "shop@example.com"),
            session_cleanup_every=timedelta(
                seconds=int(os.environ.get("SHOP_SESSION_CLEANUP_SECONDS", "900"))
            ),
            dashboard_token=os.environ.get("SHOP_DASHBOARD_TOKEN") or None,
        )

    @property
    def conveyor_url(self) -> str:
        """The queue lives in the shop's own database (in the schema the URL names)."""
        return self.database_url


@dataclass(frozen=True, slots=True)
class SQLAlchemyTarget:
    url: str
    connect_args: dict[str, str]


def sqlalchemy_target(database_url: str) -> SQLAlchemyTarget:
    """The async SQLAlchemy URL of the same database: aiosqlite for SQLite, psycopg 3 for
    PostgreSQL (the two async drivers ``enqueue(..., connection=session)`` writes with). On
    PostgreSQL the tables go in the queue's schema, through the connection's search_path."""
    parts = urlsplit(database_url)
    if parts.scheme == "sqlite":
        return SQLAlchemyTarget("sqlite+aiosqlite" + database_url.removeprefix("sqlite"), {})
    if parts.scheme in ("postgres", "postgresql"):
        query = parse_qsl(parts.query)
        schema = next((value for key, value in query if key == "schema"), "public")
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        url = urlunsplit(parts._replace(scheme="postgresql+psycopg", query=rest))
        return SQLAlchemyTarget(url, {"options": f"-csearch_path={schema}"})
    raise ValueError(f"SHOP_DATABASE_URL must be sqlite:// or postgresql://, not {database_url!r}")
