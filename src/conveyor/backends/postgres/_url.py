"""PostgreSQL URLs: ``postgresql://user:password@host:5432/dbname?schema=jobs``.

Conveyor's own options are taken out of the query string; everything else (``sslmode``,
``connect_timeout``, ``application_name``...) goes to libpq unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from conveyor._errors import UnsupportedURL
from conveyor.backends.registry import shown_url

SCHEMES: Final = frozenset({"postgresql", "postgres"})
DEFAULT_SCHEMA: Final = "public"
DEFAULT_POOL_MAX: Final = 10
# A schema name we can quote without surprises and that fits PostgreSQL's 63-byte names.
_SCHEMA: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_OWN_OPTIONS: Final = ("schema", "pool_max")


@dataclass(frozen=True, slots=True)
class PostgresURL:
    conninfo: str  # for libpq: the URL without Conveyor's options
    shown: str  # for messages: without the password
    schema: str
    pool_max: int

    @property
    def quoted_schema(self) -> str:
        return f'"{self.schema}"'

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this store (at most 63 bytes, as channel names are)."""
        return f"conveyor:{self.schema}"[:63]


def parse_url(url: str) -> PostgresURL:
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise UnsupportedURL(f"not a PostgreSQL URL: {shown_url(url)!r}")
    options = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in options if key in _OWN_OPTIONS}
    rest = [(key, value) for key, value in options if key not in _OWN_OPTIONS]
    schema = own.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA.match(schema):
        raise UnsupportedURL(
            f"invalid schema {schema!r} in {shown_url(url)!r}: letters, digits and "
            "underscores, starting with a letter or underscore, at most 63 characters"
        )
    try:
        pool_max = int(own.get("pool_max", DEFAULT_POOL_MAX))
    except ValueError:
        pool_max = 0
    if not 1 <= pool_max <= 1000:
        raise UnsupportedURL(
            f"pool_max must be a whole number from 1 to 1000 in {shown_url(url)!r}"
        )
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return PostgresURL(conninfo, shown_url(url), schema, pool_max)
