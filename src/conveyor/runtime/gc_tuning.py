"""Garbage-collector settings for a worker process.

CPython's cyclic collector runs its youngest generation every 700 net allocations of container
objects (dicts, lists, objects, coroutines, futures). A worker keeps up to ``concurrency`` jobs
in flight, and the objects of each (its record, context, coroutine, the handler's client
objects) stay alive across many such collections: each collection walks them again, promotes
them, and the older generations are walked in turn, though almost nothing they hold is cyclic
garbage. With handlers that allocate much (database and HTTP clients), that walking costs a
worker a large share of its CPU per job. Raising the first threshold lets most of a job's
objects be freed by reference counting before any collection sees them; freezing what exists
once the worker has started (the application's modules, models and settings) keeps full
collections from walking it again.

The worker applies this only when asked (``WorkerConfig.gc_threshold``; ``conveyor worker``
asks by default), and puts the previous settings back when it stops: a library must not change
an embedding application's collector behind its back.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Generator
from typing import Final

# What `conveyor worker` uses: collections stay short (a young generation of at most this many
# objects), while the objects of a typical job are freed before one runs.
WORKER_GC_THRESHOLD: Final = 20_000
MAX_GC_THRESHOLD: Final = 10_000_000


def check_gc_threshold(value: object) -> None:
    """Refuse a threshold the collector could not use, naming it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_GC_THRESHOLD:
        raise ValueError(
            f"gc_threshold must be an int from 1 to {MAX_GC_THRESHOLD:,} (or None to leave the "
            f"collector as it is), got {value!r}"
        )


@contextlib.contextmanager
def worker_gc(threshold: int | None) -> Generator[None, None, None]:
    """While the block runs: the first-generation threshold raised to ``threshold`` (never
    lowered) and the objects that exist now frozen, unless the process froze some itself
    (it then manages freezing); afterwards, the previous threshold back and what was frozen
    here unfrozen. ``None`` changes nothing."""
    if threshold is None:
        yield
        return
    before = gc.get_threshold()
    froze = gc.get_freeze_count() == 0
    if threshold > before[0]:
        gc.set_threshold(threshold, *before[1:])
    if froze:
        gc.freeze()
    try:
        yield
    finally:
        if froze:
            gc.unfreeze()
        gc.set_threshold(*before)
