"""The Lua scripts of the Redis backend: loaded from ``lua/``, with includes spliced in.

One file per driver operation. Each starts with a header stating its KEYS, ARGV, return value
and guarantee; lines ``--!include name.lua`` are replaced by the file of that name in
``lua/includes/``. Scripts run by SHA (``EVALSHA``), falling back to ``EVAL`` of the source when
the server does not know it (after a restart or ``SCRIPT FLUSH``, or on a cluster node that has
not seen it yet). Not Redis Functions: two worker versions must be able to run side by side
during a rolling deploy, each with its own scripts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

LUA_DIR: Final = Path(__file__).parent / "lua"
_INCLUDE: Final = re.compile(r"^--!include (\S+)$", re.MULTILINE)
_KEY_LINE: Final = re.compile(r"^-- KEYS\[(\d+)(\.\.)?\] (\w+):", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str
    keys: tuple[str, ...]  # the fixed KEYS, named as in the header
    variadic_keys: bool  # more KEYS may follow the fixed ones (header line ``KEYS[n..]``)


def header_keys(text: str) -> tuple[tuple[str, ...], bool]:
    """The KEYS a script's header declares, in order, and whether a variadic tail follows."""
    names: list[str] = []
    variadic = False
    for match in _KEY_LINE.finditer(text):
        index, tail, name = int(match[1]), match[2], match[3]
        if tail:
            variadic = True
            continue
        if index != len(names) + 1:
            raise ValueError(f"KEYS[{index}] {name!r} is out of order in the header")
        names.append(name)
    return tuple(names), variadic


def _splice(text: str) -> str:
    return _INCLUDE.sub(lambda m: (LUA_DIR / "includes" / m[1]).read_text().rstrip("\n"), text)


@cache
def load(name: str) -> Script:
    """The script ``lua/<name>.lua``, ready to run."""
    text = (LUA_DIR / f"{name}.lua").read_text()
    source = _splice(text)
    keys, variadic = header_keys(text)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest(), keys, variadic)


def script_names() -> list[str]:
    return sorted(path.stem for path in LUA_DIR.glob("*.lua"))
