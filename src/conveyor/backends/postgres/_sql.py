"""The SQL text of the PostgreSQL backend, read once at import.

Queries live in ``queries.sql`` and ``groups.sql`` as named sections (``-- name: job_fetch``),
one statement each, named after the driver operation; migrations in
``migrations/NNNN_name.sql``, applied in name order. Both hold ``{schema}`` where the (quoted)
schema name goes: a statement names its tables in full, so it means the same on any
connection, whatever that connection's search_path.
"""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType
from typing import Final

_NAME: Final = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_PACKAGE: Final = "conveyor.backends.postgres"


def parse_queries(text: str) -> MappingProxyType[str, str]:
    """Split a query file into ``{name: statement}``; every section must hold one statement
    (the queries keep no ``;`` inside literals, so a ``;`` before the end means two)."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
        statement = code.strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in queries.sql")
        if not statement or ";" in statement:
            raise ValueError(f"query {name!r} in queries.sql must hold exactly one statement")
        queries[name] = statement
    return MappingProxyType(queries)


def _read(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def load_migrations() -> tuple[tuple[str, str], ...]:
    """``(name, script)`` for every bundled migration, oldest first."""
    folder = resources.files(_PACKAGE).joinpath("migrations")
    found = [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return tuple(sorted(found))


def in_schema(text: str, quoted_schema: str) -> str:
    return text.replace("{schema}", quoted_schema)


def _queries(*files: str) -> MappingProxyType[str, str]:
    merged: dict[str, str] = {}
    for name in files:
        for query, text in parse_queries(_read(name)).items():
            if query in merged:
                raise ValueError(f"query {query!r} is defined twice ({name})")
            merged[query] = text
    return MappingProxyType(merged)


# groups.sql: the statements of groups (see _groups), apart so that neither file grows long.
QUERIES: Final = _queries("queries.sql", "groups.sql")
MIGRATIONS: Final = load_migrations()
