"""The memory driver's shared state: one :class:`MemoryStore` per ``memory://name`` URL."""

from __future__ import annotations

import itertools
import threading

from conveyor.backends.memory._dedup import DedupBook
from conveyor.backends.memory._groups import GroupBook
from conveyor.backends.memory._rates import RateLogs
from conveyor.drivers.records import CronInfo, JobRecord, QueueStats, WorkerInfo
from conveyor.drivers.wakeup import WakeupBoard


class MemoryStore:
    """The shared state of every :class:`MemoryDriver` connected to it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[str, JobRecord] = {}
        self.seq = itertools.count(1)
        self.paused: set[str] = set()
        self.known_queues: set[str] = set()
        self.workers: dict[str, tuple[WorkerInfo, float]] = {}  # id -> (info, expires_at)
        self.leaders: dict[str, tuple[str, float]] = {}  # name -> (holder, expires_at)
        self.routes: dict[str, str] = {}  # job name -> queue
        self.wakeups = WakeupBoard()
        self.rates = RateLogs()
        self.crons: dict[str, CronInfo] = {}  # schedule name -> its declaration and last tick
        self.dedup = DedupBook()
        self.groups = GroupBook()
        self.stats: dict[tuple[str, int], QueueStats] = {}  # (queue, minute) -> counts

    def delete(self, job_id: str) -> None:
        del self.jobs[job_id]
        self.dedup.forget(job_id)
        self.groups.forget_job(job_id)


_STORES: dict[str, MemoryStore] = {}
_STORES_LOCK = threading.Lock()


def store_named(name: str) -> MemoryStore:
    # Named stores let ``memory://name`` URLs reach the same data from several Queue objects in one
    # process (a producer and a worker in one test); an empty name gets a private store.
    if not name:
        return MemoryStore()
    with _STORES_LOCK:
        return _STORES.setdefault(name, MemoryStore())
