"""Wake-ups for idle SQLite listeners.

In one process, producers and workers on the same file share a
:class:`~conveyor.drivers.wakeup.WakeupBoard`, so a worker wakes the moment a job is inserted, and
each driver's :class:`~conveyor.drivers.wakeup.Listener` keeps a notification that lands before it
listens. Across processes there is no signal, so a listener polls ``PRAGMA data_version`` (which
changes when any other connection commits): often right after activity, less often while the file
stays quiet.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from conveyor.drivers.wakeup import WakeupBoard

POLL_MIN_SECONDS: Final = 0.01
POLL_MAX_SECONDS: Final = 0.05

_FILES: dict[str, WakeupBoard] = {}
_FILES_LOCK = threading.Lock()


def wakeups_for(path: str) -> WakeupBoard:
    # Keyed by the absolute path so relative and absolute URLs of one file share wake-ups.
    key = os.path.normcase(os.path.abspath(path))
    with _FILES_LOCK:
        return _FILES.setdefault(key, WakeupBoard())
