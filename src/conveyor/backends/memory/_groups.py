"""The memory driver's group records, and the reference of how a fetch serves groups.

The memory store is a model, not a broker: it counts a group's queued and active jobs by
looking at the jobs, so no path can forget to keep a counter. The other backends keep those
counts (and an index of eligible groups by turn) so their fetch reads no more than it leases;
the order they serve in is the one :func:`serve_groups` defines.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from conveyor.drivers.common import run_order
from conveyor.drivers.groups import group_turn, split_limit
from conveyor.drivers.rates import allowance, logged
from conveyor.drivers.records import JobGroup, JobRecord, JobState, NewJob

GroupId = tuple[str, str]  # (queue, key)


@dataclass(slots=True)
class GroupRecord:
    name: str
    limits: JobGroup
    served_at: float  # the group's turn when neither its rate nor a block holds it
    blocked_until: float | None = None
    starts: list[float] = field(default_factory=list[float])

    def rate_free_at(self) -> float | None:
        """When the rate window next has room, if it is full now (None: no rate, or room)."""
        count, per = self.limits.rate_count, self.limits.rate_per
        if not count or len(self.starts) < count:
            return None
        return self.starts[-count] + per

    def turn(self) -> float:
        return group_turn(self.served_at, self.rate_free_at(), self.blocked_until)

    def room(self, active: int, now: float) -> int:
        """How many more of its jobs may start at ``now``, by concurrency and rate."""
        if self.blocked_until is not None and self.blocked_until > now:
            return 0
        room = 1 << 30
        if self.limits.concurrency:
            room = self.limits.concurrency - active
        if self.limits.rate_count:
            room = min(
                room, allowance(self.starts, self.limits.rate_count, self.limits.rate_per, now)
            )
        return max(room, 0)


class GroupBook:
    """Every group record of a store, by (queue, key), and the limits each job carries."""

    def __init__(self) -> None:
        self.records: dict[GroupId, GroupRecord] = {}
        self.limits_of: dict[str, JobGroup] = {}  # job id -> the group it joined

    def joined(self, job_id: str, queue: str, name: str, group: JobGroup, now: float) -> None:
        """A job was inserted into ``group``: the group takes its limits."""
        self.limits_of[job_id] = group
        record = self.records.get((queue, group.key))
        if record is None:
            self.records[(queue, group.key)] = GroupRecord(name, group, served_at=now)
        else:
            record.name, record.limits = name, group

    def replaced(self, job_id: str, new: NewJob, now: float) -> None:
        """A debounced job took ``new``'s payload, and with it ``new``'s group."""
        self.limits_of.pop(job_id, None)
        if new.group is not None:
            self.joined(job_id, new.queue, new.name, new.group, now)

    def record_of(self, job: JobRecord, now: float) -> GroupRecord:
        """The record of ``job``'s group, made anew from the job's limits if it was pruned."""
        assert job.group is not None
        found = self.records.get((job.queue, job.group))
        if found is None:
            limits = self.limits_of.get(job.id, JobGroup(job.group))
            found = self.records[(job.queue, job.group)] = GroupRecord(job.name, limits, now)
        return found

    def forget_job(self, job_id: str) -> None:
        self.limits_of.pop(job_id, None)

    def block(self, queue: str, key: str, until: float, now: float) -> None:
        record = self.records.get((queue, key))
        if record is None:
            record = self.records[(queue, key)] = GroupRecord("", JobGroup(key), served_at=now)
        if record.blocked_until is None or until > record.blocked_until:
            record.blocked_until = until

    def waiting(
        self, jobs: Iterable[JobRecord], now: float, names: Collection[str] | None = None
    ) -> tuple[dict[GroupId, list[JobRecord]], dict[GroupId, int]]:
        """Each group's queued jobs (in run order; of ``names`` only, when given) and its
        active count (whatever their names: a group's concurrency counts all of them)."""
        queued: dict[GroupId, list[JobRecord]] = {}
        active: dict[GroupId, int] = {}
        for job in jobs:
            if job.group is None:
                continue
            gid = (job.queue, job.group)
            if job.state is JobState.QUEUED and (names is None or job.name in names):
                queued.setdefault(gid, []).append(job)
                self.record_of(job, now)
            elif job.state is JobState.ACTIVE:
                active[gid] = active.get(gid, 0) + 1
        for members in queued.values():
            members.sort(key=run_order)
        return queued, active

    def wait(
        self,
        jobs: Iterable[JobRecord],
        queues: Sequence[str],
        names: Sequence[str] | None,
        now: float,
    ) -> float | None:
        queued, active = self.waiting(jobs, now)
        soonest: float | None = None
        for gid in queued:
            record = self.records[gid]
            if gid[0] not in queues or (names is not None and record.name not in names):
                continue
            if record.limits.concurrency and active.get(gid, 0) >= record.limits.concurrency:
                continue
            turn = record.turn()
            if turn > now and (soonest is None or turn < soonest):
                soonest = turn
        return None if soonest is None else soonest - now

    def prune(self, jobs: Iterable[JobRecord], now: float, limit: int) -> int:
        """Delete up to ``limit`` records of groups with no queued or active job whose rate
        window and block have passed."""
        busy = {
            (j.queue, j.group)
            for j in jobs
            if j.group is not None and j.state in (JobState.QUEUED, JobState.ACTIVE)
        }
        idle = [
            gid
            for gid, record in self.records.items()
            if gid not in busy
            and record.turn() <= now
            and all(at + record.limits.rate_per <= now for at in record.starts)
        ][: max(limit, 0)]
        for gid in idle:
            del self.records[gid]
        return len(idle)


def serve_groups(
    book: GroupBook,
    queued: Mapping[GroupId, list[JobRecord]],
    active: Mapping[GroupId, int],
    *,
    want: int,
    now: float,
    accept: Callable[[JobRecord], bool],
) -> list[JobRecord]:
    """Up to ``want`` jobs of the eligible groups: groups in turn order (ties by key), one job per
    group per round, each group's own jobs in run order, never beyond a group's room.
    ``accept`` has the last word on each job (a queue's rate limit may refuse it), and a job it
    refuses ends that group's share of this fetch. Logs the starts and moves each served
    group's turn."""
    if want <= 0:
        return []
    order = sorted(
        (
            (record.turn(), gid[1], gid)
            for gid in queued
            if (record := book.records[gid]).turn() <= now
        ),
    )
    rooms = {gid: min(book.records[gid].room(active.get(gid, 0), now), want) for *_, gid in order}
    chosen: list[JobRecord] = []
    taken: dict[GroupId, int] = {}
    for depth in range(want):
        progressed = False
        for *_, gid in order:
            if len(chosen) >= want:
                break
            n = taken.get(gid, 0)
            if n != depth or n >= rooms[gid] or n >= len(queued[gid]):
                continue
            job = queued[gid][n]
            if not accept(job):
                rooms[gid] = n
                continue
            chosen.append(job)
            taken[gid] = n + 1
            progressed = True
        if not progressed or len(chosen) >= want:
            break
    for gid, n in taken.items():
        record = book.records[gid]
        if record.limits.rate_count:
            record.starts = logged(record.starts, record.limits.rate_count, n, now)
        record.served_at = now
    return chosen


def choose(
    book: GroupBook,
    queued: dict[GroupId, list[JobRecord]],
    active: dict[GroupId, int],
    plain: list[JobRecord],
    caps: dict[str, int],
    limit: int,
    at: float,
    coin: bool,
) -> list[JobRecord]:
    """Grouped jobs round-robin and plain jobs in run order, sharing ``limit`` as
    :func:`split_limit` says, and no more of a queue than its rate limit's cap."""
    taken: dict[str, int] = {}

    def accept(job: JobRecord) -> bool:
        cap = caps.get(job.queue)
        if cap is not None and taken.get(job.queue, 0) >= cap:
            return False
        taken[job.queue] = taken.get(job.queue, 0) + 1
        return True

    eligible = any(
        book.records[gid].turn() <= at and book.records[gid].room(active.get(gid, 0), at) > 0
        for gid in queued
    )
    # What may start is shared, not what was asked for: under a queue's rate limit, the limit's
    # allowance is split, or groups would take all of it and plain jobs none.
    present = {job.queue for job in plain} | {gid[0] for gid in queued}
    budget = limit
    if present and present <= caps.keys():
        budget = min(limit, sum(caps[queue] for queue in present))
    first = split_limit(budget, eligible, bool(plain), coin) if budget > 0 else 0
    chosen = serve_groups(book, queued, active, want=first, now=at, accept=accept)
    for job in plain:
        if len(chosen) >= limit:
            break
        if accept(job):
            chosen.append(job)
    if len(chosen) < limit:
        picked = {job.id for job in chosen}
        rest = {gid: [j for j in jobs if j.id not in picked] for gid, jobs in queued.items()}
        busy = dict(active)
        for job in chosen:
            if job.group is not None:
                gid = (job.queue, job.group)
                busy[gid] = busy.get(gid, 0) + 1
        chosen += serve_groups(book, rest, busy, want=limit - len(chosen), now=at, accept=accept)
    return chosen
