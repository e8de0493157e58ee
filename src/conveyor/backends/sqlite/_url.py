"""SQLite URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``?synchronous=full``."""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qs

from conveyor._errors import UnsupportedURL

SYNCHRONOUS_MODES: Final = ("normal", "full")


def synchronous_from_url(url: str) -> str:
    """The ``?synchronous=normal|full`` option (default normal); any other option is refused,
    so a misspelt one cannot be silently ignored."""
    options = parse_qs(url.partition("?")[2], keep_blank_values=True)
    unknown = sorted(set(options) - {"synchronous"})
    if unknown:
        raise UnsupportedURL(
            f"unknown SQLite URL option {unknown[0]!r} in {url!r}; the one option is "
            "synchronous=normal|full"
        )
    mode = options.get("synchronous", ["normal"])[-1].lower()
    if mode not in SYNCHRONOUS_MODES:
        raise UnsupportedURL(f"synchronous must be normal or full in {url!r}, got {mode!r}")
    return mode


def path_from_url(url: str) -> str:
    """``sqlite:///relative.db`` -> ``relative.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    scheme, sep, rest = url.partition("://")
    path = rest[1:].partition("?")[0] if rest.startswith("/") else ""
    if scheme.lower() != "sqlite" or not sep or not path or path == ":memory:":
        raise UnsupportedURL(
            f"invalid SQLite URL {url!r}: expected sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (an in-memory store is memory://name)"
        )
    return path
