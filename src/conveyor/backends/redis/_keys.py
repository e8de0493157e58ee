"""The names of the Redis keys: those of one queue, all sharing its hash tag (one Redis Cluster
slot), and those every queue of a prefix shares."""

from __future__ import annotations

from typing import Final

from conveyor.drivers.records import JobState

# Which sorted set holds the jobs of a state, scored by the time that matters to it (run time,
# lease expiry, finish time); queued jobs live in the ready list and the "queued" set instead.
STATE_SETS: Final = {
    JobState.SCHEDULED: "scheduled",
    JobState.RETRYING: "retrying",
    JobState.ACTIVE: "active",
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}
# The listing index of each state: a sorted set of job ids scored by sequence number, for
# keyset pagination and exact counts. Active jobs have none: at most the workers' concurrency
# of them, so the active set is read whole (its key below stays empty). Queued jobs in the ready
# list have none either: the list is in seq order itself (see lua/includes/place.lua), so only
# the queued set's few jobs are indexed, and the queued count adds up the list's live entries.
BY_SEQ: Final = {state: state.value + "_by_seq" for state in JobState}
INDEXED_STATES: Final = tuple(state for state in JobState if state is not JobState.ACTIVE)
SEQ_DIGITS: Final = 16  # state set members start with the sequence number, zero-padded
# The active set's member that keeps it in the skiplist encoding, scored +inf: no job (see
# ACTIVE_SENTINEL in lua/includes/active.lua).
ACTIVE_SENTINEL: Final = b"\0" + b"-" * 64


class QueueKeys:
    """The keys of one queue; every one carries the hash tag ``{<prefix>:<queue>}``. Attribute
    names are the names scripts' headers give their KEYS (see ``_script_keys.SCRIPT_KEYS``)."""

    __slots__ = (
        "active",
        "active_by_seq",
        "cancelled",
        "cancelled_by_seq",
        "completed",
        "completed_by_seq",
        "dead",
        "dedup",
        "dedup_jobs",
        "expiring",
        "failed",
        "failed_by_seq",
        "group_idle",
        "group_records",
        "groups",
        "jobs",
        "meta",
        "queue",
        "queued",
        "queued_by_seq",
        "rate_block",
        "rate_log",
        "ready",
        "retrying",
        "retrying_by_seq",
        "ring",
        "scheduled",
        "scheduled_by_seq",
        "scripts",
        "stats",
        "tag",
        "wake",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        self.queue = queue
        self.tag = tag = "{" + prefix + ":" + queue + "}"
        self.jobs = tag + ":j:"  # prefix of the job hashes: the job key is this and the id
        self.meta = tag + ":meta"
        self.ready = tag + ":ready"
        self.queued = tag + ":queued"
        self.dead = tag + ":dead"  # ready-list entries of jobs no longer queued, by id
        self.scheduled = tag + ":scheduled"
        self.retrying = tag + ":retrying"
        self.active = tag + ":active"
        self.completed = tag + ":completed"
        self.failed = tag + ":failed"
        self.cancelled = tag + ":cancelled"
        self.wake = tag + ":wake"
        self.dedup = tag + ":dedup"  # dedup key -> the record of the job holding it
        self.dedup_jobs = tag + ":dedup-jobs"  # job id -> the dedup key it took
        # Finished jobs with a retention of their own, scored by when it expires (members as in
        # the state sets); an entry whose job has moved on is dropped when its time comes.
        self.expiring = tag + ":expiring"
        # The rate limit's sliding log of start times, and the time a RateLimited blocked the
        # queue until (see conveyor.drivers.rates).
        self.rate_log = tag + ":rate:log"
        self.rate_block = tag + ":rate:block"
        # Groups (see lua/includes/groups.lua): the prefix every key of a group is built from
        # inside the scripts (its jobs ':<key>', rate log 'l:<key>'), the groups' records, the
        # ring of groups that may be served, by turn, and the groups holding no job.
        self.groups = tag + ":g"
        self.group_records = tag + ":group-records"
        self.ring = tag + ":ring"
        self.group_idle = tag + ":group-idle"
        # Per-minute throughput counters (see lua/stats_add.lua), in the queue's slot.
        self.stats = tag + ":stats"
        self.scheduled_by_seq = tag + ":by-seq:scheduled"
        self.queued_by_seq = tag + ":by-seq:queued"
        self.active_by_seq = tag + ":by-seq:active"  # never written: see BY_SEQ
        self.retrying_by_seq = tag + ":by-seq:retrying"
        self.completed_by_seq = tag + ":by-seq:completed"
        self.failed_by_seq = tag + ":by-seq:failed"
        self.cancelled_by_seq = tag + ":by-seq:cancelled"
        self.scripts: dict[str, tuple[str, ...]] = {}  # script name -> its KEYS, built once

    def job(self, job_id: str) -> str:
        return self.jobs + job_id

    def cron(self, name: str) -> str:
        """The hash of schedule ``name``, whose jobs go to this queue (see cron_fire.lua)."""
        return self.tag + ":cron:" + name

    def receipt(self, receipt: str) -> str:
        return self.tag + ":receipt:" + receipt

    def set_of(self, state: JobState) -> str:
        """The time-scored set of ``state`` (for queued: the set of out-of-order queued jobs)."""
        key: str = getattr(self, STATE_SETS.get(state, "queued"))
        return key

    def by_seq(self, state: JobState) -> str:
        key: str = getattr(self, BY_SEQ[state])
        return key

    def named(self, script: str, names: tuple[str, ...]) -> tuple[str, ...]:
        """The keys ``names`` (attribute names, in order): the KEYS of ``script``."""
        keys = self.scripts.get(script)
        if keys is None:
            keys = self.scripts[script] = tuple(getattr(self, name) for name in names)
        return keys


class Namespace:
    """The keys shared by every queue of a prefix (registry of queues, workers, leaderships,
    routes, cancel notifications, the queues with throughput counters)."""

    __slots__ = (
        "crons",
        "queues",
        "routes",
        "stats_queues",
        "tag",
        "worker_info",
        "worker_order",
        "workers",
    )

    def __init__(self, prefix: str) -> None:
        self.tag = "{" + prefix + "}"
        self.queues = self.tag + ":queues"
        self.workers = self.tag + ":workers"
        self.worker_info = self.tag + ":worker-info"
        self.worker_order = self.tag + ":worker-order"
        self.routes = self.tag + ":routes"
        self.crons = self.tag + ":crons"  # schedule name -> the queue its hash lives in
        self.stats_queues = self.tag + ":stats-queues"  # the queues with throughput counters

    def leader(self, name: str) -> str:
        return self.tag + ":leader:" + name

    def cancels(self, worker_id: str) -> str:
        """The list of ids of jobs worker ``worker_id`` runs that someone asked to cancel."""
        return self.tag + ":cancels:" + worker_id
