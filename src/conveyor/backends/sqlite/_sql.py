"""The SQL text of the SQLite backend, read once at import.

Queries live in ``queries.sql`` as named sections (``-- name: job_fetch``), one statement each,
named after the driver operation they implement; a helper step of an operation is named
``<operation>__<step>``. Migrations live in ``migrations/NNNN_name.sql`` and are applied in name
order.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from types import MappingProxyType
from typing import Final

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> MappingProxyType[str, str]:
    """Split a query file into ``{name: statement}``; every section must hold one statement."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = _strip_comments(body).strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice in queries.sql")
        if not statement or len(split_statements(statement + ";")) != 1:
            raise ValueError(f"query {name!r} in queries.sql must hold exactly one statement")
        queries[name] = statement
    return MappingProxyType(queries)


def _strip_comments(body: str) -> str:
    # Only whole-line comments: the queries keep no ``--`` inside string literals.
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))


def split_statements(script: str) -> list[str]:
    """Cut a script into complete statements.

    ``executescript`` would commit the caller's open transaction first, which would let two
    processes apply the same migration; running statement by statement keeps the migration inside
    the ``BEGIN IMMEDIATE`` that guards it.
    """
    statements: list[str] = []
    pending = ""
    # Cut after every ';' and keep growing the piece until SQLite calls it complete, so a ';'
    # inside a string, a comment or a trigger body does not end a statement.
    for piece in re.split(r"(?<=;)", script):
        pending += piece
        if sqlite3.complete_statement(pending):
            if _strip_comments(pending).strip().rstrip(";").strip():
                statements.append(pending.strip())
            pending = ""
    if _strip_comments(pending).strip():
        raise ValueError(f"incomplete SQL statement at the end of a script: {pending.strip()!r}")
    return statements


_PACKAGE: Final = "conveyor.backends.sqlite"


def load_migrations() -> tuple[tuple[str, str], ...]:
    """``(name, script)`` for every bundled migration, oldest first."""
    folder = resources.files(_PACKAGE).joinpath("migrations")
    found = [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return tuple(sorted(found))


QUERIES: Final = parse_queries(
    resources.files(_PACKAGE).joinpath("queries.sql").read_text(encoding="utf-8")
)
MIGRATIONS: Final = load_migrations()
