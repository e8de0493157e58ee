"""URL -> driver. The one place that knows which backend serves which scheme."""

from __future__ import annotations

import os
import re

from conveyor._errors import UnsupportedURL
from conveyor.drivers.protocol import Driver

DEFAULT_URL = "sqlite:///conveyor.db"

# Kept here rather than imported from the Redis backend, so that a URL can be recognised (and a
# missing client library reported) without importing redis-py.
REDIS_SCHEMES = frozenset(
    f"{base}{tls}{cluster}"
    for base in ("redis", "valkey")
    for tls in ("", "s")
    for cluster in ("", "+cluster")
) | {"unix"}


POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def configured_url(url: str | None = None) -> str:
    """``url``, else ``$CONVEYOR_URL``, else ``$REDIS_URL`` (the variable Redis hosting services
    and most Redis clients use), else the embedded default."""
    return url or os.environ.get("CONVEYOR_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL


def driver_for_url(url: str) -> Driver:
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from conveyor.backends.memory import MemoryDriver

        return MemoryDriver(url)
    if scheme == "sqlite":
        from conveyor.backends.sqlite import SQLiteDriver

        return SQLiteDriver(url)
    if scheme in REDIS_SCHEMES:
        try:
            from conveyor.backends.redis import RedisDriver
        except ImportError as exc:
            raise UnsupportedURL(
                f"{scheme}:// needs the Redis client: pip install 'conveyor[redis]' ({exc})"
            ) from None
        return RedisDriver(url)
    if scheme in POSTGRES_SCHEMES:
        try:
            from conveyor.backends.postgres import PostgresDriver
        except ImportError as exc:
            raise UnsupportedURL(
                f"{scheme}:// needs the PostgreSQL client: pip install 'conveyor[postgres]' ({exc})"
            ) from None
        return PostgresDriver(url)
    raise UnsupportedURL(
        f"unsupported backend URL {shown_url(url)!r}: expected sqlite:///path/to/file.db, "
        "redis://host:6379/0 (rediss://, unix://, redis+cluster://), "
        "postgresql://user@host:5432/dbname (?schema=name) or memory://name"
    )


def shown_url(url: str) -> str:
    """``url`` without its password, for messages and logs (the user name stays: it says which
    account was meant)."""
    return re.sub(r"^([^:/]+://[^:@/]*):[^@/]*@", r"\1:***@", url)
