"""A side SQLite database that handlers append to, independent of the queue under test.

One autocommitted connection per process, opened on first use and shared under a lock by the
event loop and sync handlers' threads, so each row is durable once ``append`` returns.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any


class SideDB:
    def __init__(self, env: str, schema: str, *, synchronous: str, timeout: float) -> None:
        self.env = env  # names the variable that holds the file's path in worker processes
        self._schema = schema
        self._synchronous = synchronous
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def connect(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    def create(self, path: str) -> None:
        """Create the empty database at ``path`` (the test does, before any worker starts)."""
        conn = self.connect(path)
        try:
            conn.executescript(self._schema)
        finally:
            conn.close()

    def append(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = self.connect(os.environ[self.env])
            self._conn.execute(sql, args)
