"""The SQL text of the outbox, read once at import: ``sqlite.sql`` and ``postgres.sql``, named
sections of one statement each, as the backends keep theirs (see
:mod:`conveyor.backends.sqlite._sql`). Sections named ``outbox…`` run on the application's
connection or create the table; ``relay__…`` ones run on the relay's own connection."""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType
from typing import Final, LiteralString

from conveyor.backends.sqlite._sql import parse_queries

_PACKAGE: Final = "conveyor.outbox"


def _load(name: str) -> MappingProxyType[str, str]:
    return parse_queries(resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8"))


SQLITE: Final = _load("sqlite.sql")
POSTGRES: Final = _load("postgres.sql")

# PostgreSQL schema names the outbox accepts: plain identifiers, written quoted into the SQL.
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def is_identifier(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


def postgres_queries(schema: str, channel: str) -> dict[str, LiteralString]:
    """The PostgreSQL statements for one schema; both names were checked by the caller, so
    the text is as trusted as the file's (hence ``LiteralString``, which psycopg asks for)."""
    assert is_identifier(schema) and '"' not in channel
    return {
        name: _trusted(text.replace("{schema}", f'"{schema}"').replace("{channel}", f'"{channel}"'))
        for name, text in POSTGRES.items()
    }


def _trusted(text: str) -> LiteralString:
    return text  # pyright: ignore[reportReturnType]


_PARAM: Final = re.compile(r":(\w+)")


def sqlite_insert(rows: int) -> str:
    """The SQLite insert of ``rows`` jobs in one statement: the VALUES row of
    ``outbox_insert_many`` repeated, its parameters numbered (``:id_0``...) except ``:now``."""
    head, sep, row = SQLITE["outbox_insert_many"].partition("VALUES")
    assert sep

    def numbered(n: int) -> str:
        return _PARAM.sub(lambda m: m[0] if m[1] == "now" else f":{m[1]}_{n}", row.strip())

    return f"{head}{sep} " + ",\n".join(numbered(n) for n in range(rows))
