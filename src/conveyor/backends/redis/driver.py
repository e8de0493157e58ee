"""The Redis/Valkey driver: the production broker, for any number of workers on any number of
hosts, standalone or Redis Cluster.

Every state change of a queue is one Lua script over that queue's keys (one hash tag, so one
Cluster slot); see ``lua/`` for each script's guarantee, :mod:`._stubs` and
:mod:`._coordination` for the only code that knows script arguments and replies, :mod:`._keys`
for key names. The driver is split by responsibility: :mod:`._fetching` leases jobs,
:mod:`._maintenance` rescues, promotes, prunes and purges across queues, :mod:`._listing` reads
jobs for people, :mod:`._inspect` deletes finished jobs and keeps the per-minute throughput
counters, :mod:`._wakeups` wakes idle workers and :mod:`._cancels` tells workers of cancelled
jobs. ``now=None`` means the server's clock (``TIME``). Every input is checked in Python before
anything is sent, and again by each script before its first write.

Job ids are unique per store, as in every backend: within a queue atomically, and across queues
by checking the other queues this process knows of (the list is refreshed every few seconds),
in the same script on a standalone server and just before the insert on a cluster, where they
live on other nodes. Only producers racing one id into two queues at once could both win.

Groups (``NewJob.group``) live in each queue's keys too: a grouped job waits in its group's own
sorted set, and a ring of the groups that may be served, ordered by turn, lets a fetch read as
many groups as it leases jobs; every script that places a job or takes one out of ``active``
keeps them (see ``lua/includes/groups.lua`` and ``serve.lua``). A queue without groups pays one
read of its empty ring per fetch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor._errors import InvalidArgument
from conveyor._slots import fast_constructor
from conveyor.backends.redis import _commands as commands
from conveyor.backends.redis import _coordination as coord
from conveyor.backends.redis import _listing, _maintenance
from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._blocking import BlockingClient, drive
from conveyor.backends.redis._cancels import CancelNotices
from conveyor.backends.redis._connection import (
    INFRASTRUCTURE_ERRORS,
    Client,
    make_blocking_client,
    parse_url,
    setup_warnings,
)
from conveyor.backends.redis._cron import Schedules
from conveyor.backends.redis._fetching import Fetcher
from conveyor.backends.redis._inspect import Inspection
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._store import Store
from conveyor.backends.redis._wakeups import Wakeups
from conveyor.drivers.blocking import BlockingInserter
from conveyor.drivers.common import (
    CANCELLED_ERROR,
    check_cron_fire,
    check_cron_schedules,
    check_finishes,
    check_ids,
    check_new_jobs,
    check_now,
    check_progress,
    check_rate_limits,
    check_rate_seconds,
    check_rescues,
    check_stats,
)
from conveyor.drivers.groups import GROUP_KEY_CHARS
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import (
    ChangeResult,
    ChangeStatus,
    CronFire,
    CronFireResult,
    CronInfo,
    CronSchedule,
    ExtendResult,
    FetchParams,
    FinishJob,
    InsertResult,
    InsertStatus,
    JobRecord,
    JobState,
    Lease,
    ListParams,
    NewJob,
    ProgressUpdate,
    PurgeParams,
    QueueInfo,
    QueueStats,
    RateLimit,
    RescueJob,
    Retention,
    TransitionResult,
    TransitionStatus,
    WorkerInfo,
)


def check_group_key(group: object) -> None:
    """Refuse a group key no job could have (see conveyor.drivers.groups.check_group)."""
    if not isinstance(group, str) or not 1 <= len(group) <= GROUP_KEY_CHARS or "\x00" in group:
        raise InvalidArgument(
            f"group key must be text of 1 to {GROUP_KEY_CHARS} characters without NUL, "
            f"got {group!r}"
        )


# TransitionResult(...) and InsertResult(...) at a third of the cost: one per finished or
# inserted job (see conveyor._slots).
_new_result = fast_constructor(TransitionResult)
_new_inserted = fast_constructor(InsertResult)


def _insert_results(
    jobs: Sequence[NewJob], replies: Sequence[tuple[bool, JobState]]
) -> list[InsertResult]:
    """The insert script's replies (see ``stubs.inserted``) as results of ``jobs``."""
    inserted, duplicate = InsertStatus.INSERTED, InsertStatus.DUPLICATE
    return [
        _new_inserted(job.id, inserted if new else duplicate, state)
        for job, (new, state) in zip(jobs, replies, strict=True)
    ]


class RedisDriver:
    """A connection (pool) to one Redis or Valkey deployment; see :mod:`._connection` for URLs.

    Job names cannot be filtered on in a fetch (a queue's jobs are kept in one run order), so
    ``FetchParams.names`` is ignored and ``Capability.FETCH_BY_NAME`` not declared."""

    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.SHARED_ACROSS_PROCESSES,
            Capability.LISTEN_ACROSS_PROCESSES,
            Capability.CANCEL_NOTIFY,
            Capability.LEASE_AHEAD,
        }
    )
    infrastructure_errors: tuple[type[Exception], ...] = INFRASTRUCTURE_ERRORS

    def __init__(self, url: str) -> None:
        self.source_url = url
        self._target = parse_url(url)
        self.url = self._target.display
        self._store = Store(self._target)
        self._wakeups = Wakeups(lambda: self._store.client, self._store.keys)
        self._fetcher = Fetcher(self._store, self._wakeups)
        self._cancels = CancelNotices(self._store)
        self._schedules = Schedules(self._store)
        self._inspection = Inspection(self._store)

    def __repr__(self) -> str:
        return f"RedisDriver({self.url!r})"

    @property
    def cluster(self) -> bool:
        return self._target.cluster

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self, *, create: bool = True) -> None:
        # No I/O: the client connects on its first command, so an API process that never
        # enqueues never connects, and a worker that starts before Redis keeps trying. There
        # is no schema to create either, so ``create`` changes nothing.
        self._store.open()
        self._wakeups.open()

    async def close(self) -> None:
        self._wakeups.close()
        self._cancels.close()
        await self._store.close()

    def connect_another(self) -> RedisDriver:
        return RedisDriver(self.source_url)

    async def migrate(self) -> list[str]:
        return []  # no schema: keys are created as they are used

    async def setup_warnings(self) -> list[str]:
        return await setup_warnings(self._c, self.url)

    @property
    def _c(self) -> Client:
        return self._store.client

    def _q(self, queue: str) -> QueueKeys:
        return self._store.keys(queue)

    def blocking_inserter(self) -> BlockingInserter | None:
        """This driver's insert, run by the caller's thread over a blocking connection of its
        own (see :class:`~._blocking.BlockingClient`); None on a cluster."""
        client = make_blocking_client(self._target)
        if client is None:
            return None
        twin = RedisDriver(self.source_url)
        twin._store.use(client)
        return _BlockingInserter(twin, twin._store)

    # -- inserting ---------------------------------------------------------------------------

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        check_now(now)
        check_new_jobs(jobs)
        if not jobs:
            return []
        results: list[InsertResult | None] = [None] * len(jobs)
        by_queue: dict[str, list[int]] = {}
        for n, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(n)
        for queue, positions in by_queue.items():
            await self._store.register(queue)
            others = [self._q(q) for q in await self._store.known(fresh=False) if q != queue]
            batch = [jobs[n] for n in positions]
            if others and self.cluster:
                positions, batch = await self._set_aside_duplicates(
                    positions, batch, others, results
                )
                others = []
            if batch and any(job.dedup is not None for job in batch):
                keyed = await stubs.insert_dedup(self._c, self._q(queue), batch, now, others)
                for n, (status, state, job_id) in zip(positions, keyed, strict=True):
                    results[n] = InsertResult(job_id, status, state)
            elif batch:
                replies = await stubs.insert(self._c, self._q(queue), batch, now, others)
                for n, result in zip(positions, _insert_results(batch, replies), strict=True):
                    results[n] = result
        return [r for r in results if r is not None]

    @property
    def can_start_inserts(self) -> bool:
        return not self.cluster  # a cluster's client is redis-py's, which writes in a task

    def start_insert(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> asyncio.Future[list[InsertResult]] | None:
        """:meth:`job_insert_many` with its script call sent before this returns (see
        :mod:`conveyor.drivers.started`), for jobs of one queue this driver has registered,
        none with a dedup key, on standalone Redis with a connection up; else None."""
        if not jobs or self.cluster:
            return None
        queue = jobs[0].queue
        for job in jobs:
            if job.queue != queue or job.dedup is not None:
                return None
        known = self._store.known_now(queue)
        client = self._store.client_if_open
        if known is None or client is None:
            return None
        try:
            check_now(now)
            check_new_jobs(jobs)
        except InvalidArgument:
            return None  # job_insert_many refuses them, as it always does
        others = [self._q(q) for q in known if q != queue]
        sent = stubs.start_insert(client, self._q(queue), jobs, now, others)
        if sent is None:
            return None
        return asyncio.ensure_future(self._started_reply(sent, jobs, now))

    async def _started_reply(
        self, sent: asyncio.Future[Any], jobs: Sequence[NewJob], now: float | None
    ) -> list[InsertResult]:
        try:
            reply = await sent
        except Exception:
            # Sent once, without the client's retries: a lost connection, a server that lost
            # its scripts or a refusal. The usual path sends it again (an insert is deduplicated
            # by id, so nothing is written twice) and reports what it finds.
            return await self.job_insert_many(jobs, now=now)
        return _insert_results(jobs, stubs.inserted(reply))

    async def _set_aside_duplicates(
        self,
        positions: list[int],
        batch: list[NewJob],
        others: list[QueueKeys],
        results: list[InsertResult | None],
    ) -> tuple[list[int], list[NewJob]]:
        """On a cluster, report ids that already exist in another queue as duplicates and keep
        them out of the insert (the other queues live in other slots, out of the script's reach)."""
        found = await commands.locate(self._c, others, [job.id for job in batch])
        if not found:
            return positions, batch
        wanted = [(found[j.id], j.id) for j in batch if j.id in found]
        states: dict[str, JobState] = {}
        for row in await commands.read_jobs(self._c, wanted):
            if isinstance(row, list):
                states[row[0].decode()] = JobState(row[3].decode())
        kept_positions: list[int] = []
        kept: list[NewJob] = []
        for n, job in zip(positions, batch, strict=True):
            if job.id in states:
                results[n] = InsertResult(job.id, InsertStatus.DUPLICATE, states[job.id])
            else:
                kept_positions.append(n)
                kept.append(job)
        return kept_positions, kept

    # -- leases and outcomes -----------------------------------------------------------------

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        check_now(now)
        check_rate_limits(params.rate_limits)
        return await self._fetcher.fetch(params, now, wait)

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        check_now(now)
        if not leases:
            return ExtendResult((), ())
        outcome = [2] * len(leases)  # lost unless a queue script says otherwise
        for keys, positions in await self._store.group([(le.job_id, le.queue) for le in leases]):
            batch = [leases[n] for n in positions]
            replies = await stubs.extend(self._c, keys, batch, lease_seconds, now)
            for n, reply in zip(positions, replies, strict=True):
                outcome[n] = reply
        lost = tuple(le.job_id for le, o in zip(leases, outcome, strict=True) if o == 2)
        cancel = tuple(le.job_id for le, o in zip(leases, outcome, strict=True) if o == 1)
        return ExtendResult(lost, cancel)

    async def job_finish_many(
        self,
        finishes: Sequence[FinishJob],
        *,
        retention: Retention,
        now: float | None = None,
    ) -> list[TransitionResult]:
        check_now(now)
        check_finishes(finishes)
        if not finishes:
            return []
        statuses = [TransitionStatus.NOT_FOUND] * len(finishes)
        for keys, positions in await self._store.group([(f.job_id, f.queue) for f in finishes]):
            batch = [finishes[n] for n in positions]
            replies = await stubs.finish(
                self._c, keys, batch, keep=retention.completed_max_count, now=now
            )
            for n, status in zip(positions, replies, strict=True):
                statuses[n] = status
        return [_new_result(f.job_id, s) for f, s in zip(finishes, statuses, strict=True)]

    # -- maintenance (see ._maintenance) -------------------------------------------------------

    async def job_expired(self, *, limit: int, now: float | None = None) -> list[JobRecord]:
        check_now(now)
        return await _maintenance.job_expired(self._store, limit, now)

    async def job_rescue_many(
        self, rescues: Sequence[RescueJob], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_rescues(rescues)
        return await _maintenance.job_rescue_many(self._store, rescues, now)

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        check_now(now)
        return await _maintenance.job_promote_due(self._store, limit, now)

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        check_now(now)
        return await _maintenance.job_prune_finished(self._store, retention, limit, now)

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int:
        check_now(now)
        return await _maintenance.job_purge(self._store, params)

    # -- operators ---------------------------------------------------------------------------

    async def job_delete_many(self, ids: Sequence[str]) -> list[ChangeResult]:
        check_ids(ids)
        return await self._inspection.delete_many(ids)

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        check_now(now)
        results = [ChangeResult(job_id, ChangeStatus.NOT_FOUND, None) for job_id in ids]
        told: list[tuple[str, str]] = []  # (worker id, job id) of running jobs asked to stop
        for keys, positions in await self._store.group([(job_id, None) for job_id in ids]):
            batch = [ids[n] for n in positions]
            replies = await stubs.cancel(self._c, keys, batch, CANCELLED_ERROR, now)
            for n, (change, worker_id) in zip(positions, replies, strict=True):
                results[n] = change
                if worker_id is not None:
                    told.append((worker_id, change.job_id))
        await self._cancels.push(told)
        return results

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        check_now(now)
        results = [ChangeResult(job_id, ChangeStatus.NOT_FOUND, None) for job_id in ids]
        located = await self._store.locate(ids) if ids else {}
        # Runs of consecutive ids in one queue, in input order: retried jobs get new sequence
        # numbers in the order they were asked for, across queues too.
        positions = [n for n, job_id in enumerate(ids) if job_id in located]
        for queue, run in itertools.groupby(positions, key=lambda n: located[ids[n]].queue):
            run_positions = list(run)
            batch = [ids[n] for n in run_positions]
            replies = await stubs.retry(self._c, self._q(queue), batch, now)
            for n, change in zip(run_positions, replies, strict=True):
                results[n] = change
        return results

    # -- reading (see ._listing) ---------------------------------------------------------------

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]:
        return await _listing.job_get_many(self._store, list(ids))

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        return await _listing.job_list(self._store, params)

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        return await _listing.job_count_by_state(self._store, queue)

    # -- throughput counters (see ._inspect) ---------------------------------------------------

    async def stats_add(self, samples: Sequence[QueueStats], *, now: float | None = None) -> None:
        check_now(now)
        check_stats(samples)
        await self._inspection.stats_add(samples, now)

    async def stats_read(
        self, queues: Sequence[str] | None, *, since_minute: int
    ) -> list[QueueStats]:
        return await self._inspection.stats_read(queues, since_minute)

    # -- queues ------------------------------------------------------------------------------

    async def queue_list(self) -> list[QueueInfo]:
        return await _listing.queue_list(self._store)

    async def queue_pause(self, queue: str) -> None:
        await self._store.register(queue)
        await commands.pause(self._c, self._q(queue))

    async def queue_resume(self, queue: str) -> None:
        await coord.resume(self._c, self._q(queue))

    # -- workers, routes and leadership ------------------------------------------------------

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        check_now(now)
        keys = commands.worker_keys(self._store.ns)
        await coord.heartbeat(self._c, keys, now, ttl, info.id, commands.describe_worker(info))

    async def worker_deregister(self, worker_id: str) -> None:
        await commands.deregister(self._c, self._store.ns, worker_id)

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        check_now(now)
        return await commands.live_workers(self._c, self._store.ns, now)

    async def route_register(self, routes: Mapping[str, str]) -> None:
        await commands.route_register(self._c, self._store.ns, routes)

    async def route_list(self) -> dict[str, str]:
        return await commands.route_list(self._c, self._store.ns)

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        check_now(now)
        return await coord.leader_acquire(self._c, self._store.ns.leader(name), holder, ttl, now)

    async def leader_release(self, name: str, holder: str) -> None:
        await coord.leader_release(self._c, self._store.ns.leader(name), holder)

    # -- wake-ups and cancel notices (see ._wakeups, ._cancels) --------------------------------

    def notify(self, queue: str) -> None:
        self._wakeups.notify(queue)

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        await self._wakeups.listen(queues, timeout)

    async def cancel_listen(self, worker_id: str, timeout: float) -> list[str]:
        return await self._cancels.listen(worker_id, timeout)

    # -- schedules -------------------------------------------------------------------------------

    async def cron_register(
        self, schedules: Sequence[CronSchedule], *, now: float | None = None
    ) -> dict[str, int | None]:
        check_now(now)
        check_cron_schedules(schedules)
        return await self._schedules.register(schedules, now)

    async def cron_fire(self, fire: CronFire, *, now: float | None = None) -> CronFireResult:
        check_now(now)
        check_cron_fire(fire)
        check_new_jobs([fire.job])  # as an insert checks its jobs (the headers too)
        return await self._schedules.fire(fire, now)

    async def cron_list(self) -> list[CronInfo]:
        return await self._schedules.listing()

    async def job_progress_many(
        self, updates: Sequence[ProgressUpdate], *, now: float | None = None
    ) -> list[TransitionResult]:
        check_now(now)
        check_progress(updates)
        statuses = [TransitionStatus.NOT_FOUND] * len(updates)
        for keys, positions in await self._store.group([(u.job_id, u.queue) for u in updates]):
            replies = await stubs.progress(self._c, keys, [updates[n] for n in positions], now)
            for n, status in zip(positions, replies, strict=True):
                statuses[n] = status
        return [TransitionResult(u.job_id, s) for u, s in zip(updates, statuses, strict=True)]

    async def rate_limit_block(
        self, queue: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_rate_seconds(seconds, f"block of queue {queue!r}")
        await coord.rate_limit_block(self._c, self._q(queue), seconds, now)

    async def rate_limit_wait(
        self, limits: Sequence[RateLimit], *, now: float | None = None
    ) -> dict[str, float]:
        check_now(now)
        check_rate_limits(limits)
        waits = await asyncio.gather(
            *(coord.rate_limit_wait(self._c, self._q(r.queue), r.count, r.per, now) for r in limits)
        )
        return {r.queue: w for r, w in zip(limits, waits, strict=True) if w is not None}

    # -- groups --------------------------------------------------------------------------------

    async def group_block(
        self, queue: str, group: str, seconds: float, *, now: float | None = None
    ) -> None:
        check_now(now)
        check_group_key(group)
        check_rate_seconds(seconds, f"block of group {group!r} of queue {queue!r}")
        await coord.group_block(self._c, self._q(queue), group, seconds, now)

    async def group_wait(
        self,
        queues: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        now: float | None = None,
    ) -> float | None:
        check_now(now)
        if names is not None and not names:
            return None  # no name: no group
        unique = list(dict.fromkeys(queues))
        waits = await asyncio.gather(
            *(coord.group_wait(self._c, self._q(queue), names, now) for queue in unique)
        )
        found = [w for w in waits if w is not None]
        return min(found) if found else None


class _BlockingInserter:
    """:meth:`RedisDriver.job_insert_many` of a driver whose client blocks: the same code,
    driven by the calling thread (its coroutines never suspend)."""

    def __init__(self, driver: RedisDriver, store: Store) -> None:
        self._driver = driver
        self._store = store

    def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        return drive(self._driver.job_insert_many(jobs, now=now))

    def close(self) -> None:
        client = self._store.client
        if isinstance(client, BlockingClient):
            client.close()
