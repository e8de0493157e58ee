"""Wake-ups for idle SQLite listeners.

In one process, producers and workers on the same file share a :class:`WakeupBoard`, so a worker
wakes the moment a job is inserted. Across processes there is no signal, so a listener polls
``PRAGMA data_version`` (which changes when any other connection commits): often right after
activity, less often while the file stays quiet.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Final

from conveyor.drivers.wakeup import WakeupBoard

POLL_MIN_SECONDS: Final = 0.01
POLL_MAX_SECONDS: Final = 0.05


class FileWakeups:
    """The wake-up board of one database file, plus a per-queue notification counter.

    The counter closes the gap between reading it and registering on the board: a notification
    that lands in between is seen on the next poll instead of being lost.
    """

    def __init__(self) -> None:
        self.board = WakeupBoard()
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}

    def notify(self, queue: str) -> None:
        with self._lock:
            self._generations[queue] = self._generations.get(queue, 0) + 1
        self.board.notify(queue)

    def generation(self, queues: Sequence[str]) -> int:
        with self._lock:
            return sum(self._generations.get(queue, 0) for queue in queues)


_FILES: dict[str, FileWakeups] = {}
_FILES_LOCK = threading.Lock()


def wakeups_for(path: str) -> FileWakeups:
    # Keyed by the absolute path so relative and absolute URLs of one file share wake-ups.
    key = os.path.normcase(os.path.abspath(path))
    with _FILES_LOCK:
        return _FILES.setdefault(key, FileWakeups())
