"""How long each kind of write transaction waited for and then held SQLite's write lock.

Off unless ``$CONVEYOR_SQLITE_LOCK_STATS`` names a directory: then every process records, per
kind of write (``fetch``, ``finish``, ``extend``...), the time from ``BEGIN IMMEDIATE`` to its
return (waiting for the lock) and from there to ``COMMIT`` (holding it), and writes them to
``<dir>/<pid>.json`` when its connections close (and at exit); a write that is one statement
run as its own transaction is recorded whole as held (its wait and hold are one step).
``bench/sqlite_lock_contention.py`` reads them; a user can set it to see which writes keep
producers waiting.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from typing import Final

ENV: Final = "CONVEYOR_SQLITE_LOCK_STATS"
# Samples kept per kind and measure: enough for a p99.9 over a bench run, bounded for a
# process that runs for days with the variable set.
MAX_SAMPLES: Final = 200_000

_directory = os.environ.get(ENV) or None
_lock = threading.Lock()
_samples: dict[str, dict[str, list[float]]] = {}


def enabled() -> bool:
    return _directory is not None


def record(kind: str, waited: float, held: float) -> None:
    with _lock:
        measures = _samples.setdefault(kind, {"wait": [], "hold": []})
        if len(measures["hold"]) < MAX_SAMPLES:
            measures["wait"].append(waited)
            measures["hold"].append(held)


def dump() -> None:
    """Write what this process measured so far (replacing its earlier dump)."""
    if _directory is None:
        return
    with _lock:
        data = {kind: {k: list(v) for k, v in m.items()} for kind, m in _samples.items()}
    if not data:
        return
    path = os.path.join(_directory, f"{os.getpid()}.json")
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # a diagnostic must never break the queue


if _directory is not None:
    atexit.register(dump)
