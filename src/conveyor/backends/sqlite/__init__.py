"""The SQLite backend: zero-setup storage for one host, shared by any number of processes."""

from conveyor.backends.sqlite.driver import SQLiteDriver

__all__ = ["SQLiteDriver"]
