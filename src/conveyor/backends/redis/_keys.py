"""The names of the Redis keys: those of one queue, all sharing its hash tag (one Redis Cluster
slot), and those every queue of a prefix shares."""

from __future__ import annotations

from typing import Final

from conveyor.drivers.records import JobState

QUEUE_KEYS: Final = (
    "jobs",
    "meta",
    "ready",
    "queued",
    "scheduled",
    "retrying",
    "active",
    "completed",
    "failed",
    "cancelled",
    "wake",
)

# Which sorted set holds the jobs of a state (queued jobs live in the ready list and "queued").
STATE_SETS: Final = {
    JobState.SCHEDULED: "scheduled",
    JobState.RETRYING: "retrying",
    JobState.ACTIVE: "active",
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}
SEQ_DIGITS: Final = 16  # set members start with the sequence number, zero-padded


class QueueKeys:
    """The keys of one queue; every one carries the hash tag ``{<prefix>:<queue>}``."""

    __slots__ = (
        "active",
        "all",
        "cancelled",
        "completed",
        "failed",
        "jobs",
        "meta",
        "queue",
        "queued",
        "ready",
        "retrying",
        "scheduled",
        "tag",
        "wake",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        self.queue = queue
        self.tag = "{" + prefix + ":" + queue + "}"
        self.jobs = self.tag + ":j:"
        self.meta = self.tag + ":meta"
        self.ready = self.tag + ":ready"
        self.queued = self.tag + ":queued"
        self.scheduled = self.tag + ":scheduled"
        self.retrying = self.tag + ":retrying"
        self.active = self.tag + ":active"
        self.completed = self.tag + ":completed"
        self.failed = self.tag + ":failed"
        self.cancelled = self.tag + ":cancelled"
        self.wake = self.tag + ":wake"
        self.all: tuple[str, ...] = tuple(getattr(self, name) for name in QUEUE_KEYS)

    def job(self, job_id: str) -> str:
        return self.jobs + job_id

    def set_of(self, state: JobState) -> str:
        key: str = getattr(self, STATE_SETS[state])
        return key


class Namespace:
    """The keys shared by every queue of a prefix (registry of queues, workers, leaderships)."""

    __slots__ = ("queues", "tag", "worker_info", "worker_order", "workers")

    def __init__(self, prefix: str) -> None:
        self.tag = "{" + prefix + "}"
        self.queues = self.tag + ":queues"
        self.workers = self.tag + ":workers"
        self.worker_info = self.tag + ":worker-info"
        self.worker_order = self.tag + ":worker-order"

    def leader(self, name: str) -> str:
        return self.tag + ":leader:" + name
