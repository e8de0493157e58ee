"""URL -> driver. The one place that knows which backend serves which scheme."""

from __future__ import annotations

from conveyor._errors import UnsupportedURL
from conveyor.drivers.protocol import Driver

DEFAULT_URL = "sqlite:///conveyor.db"


def driver_for_url(url: str) -> Driver:
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from conveyor.backends.memory import MemoryDriver

        return MemoryDriver(url)
    if scheme == "sqlite":
        from conveyor.backends.sqlite import SQLiteDriver

        return SQLiteDriver(url)
    raise UnsupportedURL(
        f"unsupported backend URL {url!r}: expected sqlite:///path/to/file.db or memory://name"
    )
