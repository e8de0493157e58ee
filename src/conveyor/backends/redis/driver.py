"""The Redis/Valkey driver: the production broker, for any number of workers on any number of
hosts, standalone or Redis Cluster.

Every state change of a queue is one Lua script over that queue's keys (one hash tag, so one
Cluster slot); see ``lua/`` for each script's guarantee, :mod:`._stubs` for the only code that
knows script arguments and replies, :mod:`._keys` for key names. An operation that spans queues
(a worker serving several, rescue, promotion, retention across queues) reads each queue,
decides what the reference model would (:mod:`._across`), then applies each queue's share with
that queue's script, which re-checks what it was given. Idle workers wait as :mod:`._wakeups`
describes. ``now=None`` means the server's clock (``TIME``).

Job ids are unique per store, as in every backend: within a queue atomically, and across queues
by checking the other queues this process knows of (the list is refreshed every few seconds),
in the same script on a standalone server and just before the insert on a cluster, where they
live on other nodes. Only producers racing one id into two queues at once could both win.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Final

from redis.asyncio.cluster import RedisCluster

from conveyor.backends.redis import _across
from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._connection import (
    INFRASTRUCTURE_ERRORS,
    Client,
    make_client,
    parse_url,
    setup_warnings,
)
from conveyor.backends.redis._keys import SEQ_DIGITS, STATE_SETS, Namespace, QueueKeys
from conveyor.backends.redis._records import JOB_FIELDS, CorruptJob, decode_job
from conveyor.backends.redis._resp import NoScript
from conveyor.backends.redis._wakeups import MIN_BLOCK, Wakeups
from conveyor.drivers.common import (
    CANCELLED_ERROR,
    LOST_WHILE_CANCELLING,
    cancelled_error,
    stalled_error_template,
    validate_finishes,
)
from conveyor.drivers.protocol import Capability
from conveyor.drivers.records import (
    TERMINAL_STATES,
    ChangeResult,
    ChangeStatus,
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
    PurgeParams,
    QueueInfo,
    RescueResult,
    Retention,
    TransitionKind,
    TransitionResult,
    TransitionStatus,
    WorkerInfo,
)

log = logging.getLogger("conveyor.redis")

# Due jobs promoted by one fetch: enough for any realistic backlog to drain in a few fetches,
# bounded so that one script never blocks the server for long.
PROMOTE_BUDGET: Final = 1000
CHUNK: Final = 1000  # jobs per call when purging a large queue
QUEUES_TTL: Final = 2.0  # seconds the list of known queues is reused for duplicate checks


class RedisDriver:
    """A connection (pool) to one Redis or Valkey deployment; see :mod:`._connection` for URLs."""

    capabilities: frozenset[Capability] = frozenset(
        {Capability.SHARED_ACROSS_PROCESSES, Capability.LISTEN_ACROSS_PROCESSES}
    )
    infrastructure_errors: tuple[type[Exception], ...] = INFRASTRUCTURE_ERRORS

    def __init__(self, url: str) -> None:
        self._raw_url = url
        self._target = parse_url(url)
        self.url = self._target.display
        self._ns = Namespace(self._target.prefix)
        self._client: Client | None = None
        self._keys: dict[str, QueueKeys] = {}
        self._registered: set[str] = set()
        self._queues_cache: tuple[float, list[str]] = (float("-inf"), [])
        self._wakeups = Wakeups(lambda: self._c, self._q)

    def __repr__(self) -> str:
        return f"RedisDriver({self.url!r})"

    @property
    def cluster(self) -> bool:
        return self._target.cluster

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        # No I/O: the client connects on its first command, so an API process that never
        # enqueues never connects, and a worker that starts before Redis keeps trying.
        if self._client is None:
            self._client = make_client(self._target)
            self._wakeups.open()

    async def close(self) -> None:
        client, self._client = self._client, None
        self._wakeups.close()
        if client is not None:
            await client.aclose()

    def connect_another(self) -> RedisDriver:
        return RedisDriver(self._raw_url)

    async def migrate(self) -> list[str]:
        return []  # no schema: keys are created as they are used

    async def setup_warnings(self) -> list[str]:
        return await setup_warnings(self._c, self.url)

    @property
    def _c(self) -> Client:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._client

    def _q(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = QueueKeys(self._target.prefix, queue)
        return keys

    async def _known(self, *, fresh: bool = True) -> list[str]:
        """The queues that exist (recently cached when ``fresh`` is false)."""
        at, cached = self._queues_cache
        if not fresh and time.monotonic() - at < QUEUES_TTL:
            return cached
        known = await stubs.known_queues(self._c, self._ns)
        self._queues_cache = (time.monotonic(), known)
        return known

    async def _register(self, queue: str) -> None:
        if queue not in self._registered:
            await stubs.register_queue(self._c, self._ns, queue)
            self._registered.add(queue)
            at, known = self._queues_cache
            if queue not in known:
                self._queues_cache = (at, sorted([*known, queue]))

    async def _locate(self, ids: Sequence[str]) -> dict[str, QueueKeys]:
        queues = [self._q(name) for name in await self._known()]
        return await stubs.locate(self._c, queues, list(dict.fromkeys(ids)))

    async def _server_now(self, now: float | None) -> float:
        return now if now is not None else await stubs.server_time(self._c)

    # -- inserting ---------------------------------------------------------------------------

    async def job_insert_many(
        self, jobs: Sequence[NewJob], *, now: float | None = None
    ) -> list[InsertResult]:
        if not jobs:
            return []
        results: list[InsertResult | None] = [None] * len(jobs)
        by_queue: dict[str, list[int]] = {}
        for n, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(n)
        for queue, positions in by_queue.items():
            # Registered first: a queue with jobs must always be known, or maintenance (rescue,
            # promotion, retention) and lookups by id would never see them.
            await self._register(queue)
            others = [self._q(q) for q in await self._known(fresh=False) if q != queue]
            batch = [jobs[n] for n in positions]
            if others and self.cluster:
                positions, batch = await self._set_aside_duplicates(
                    positions, batch, others, results
                )
                others = []
            if batch:
                replies = await stubs.insert(self._c, self._q(queue), batch, now, others)
                for n, (inserted, state) in zip(positions, replies, strict=True):
                    status = InsertStatus.INSERTED if inserted else InsertStatus.DUPLICATE
                    results[n] = InsertResult(jobs[n].id, status, state)
        return [r for r in results if r is not None]

    async def _set_aside_duplicates(
        self,
        positions: list[int],
        batch: list[NewJob],
        others: list[QueueKeys],
        results: list[InsertResult | None],
    ) -> tuple[list[int], list[NewJob]]:
        """On a cluster, report ids that already exist in another queue as duplicates and keep
        them out of the insert (the other queues live in other slots, out of the script's reach)."""
        found = await stubs.locate(self._c, others, [job.id for job in batch])
        if not found:
            return positions, batch
        rows = await stubs.read_jobs(self._c, [(found[j.id], j.id) for j in batch if j.id in found])
        states = {row[0].decode(): JobState(row[3].decode()) for row in rows if row is not None}
        kept_positions: list[int] = []
        kept: list[NewJob] = []
        for n, job in zip(positions, batch, strict=True):
            if job.id in states:
                results[n] = InsertResult(job.id, InsertStatus.DUPLICATE, states[job.id])
            else:
                kept_positions.append(n)
                kept.append(job)
        return kept_positions, kept

    # -- fetching ----------------------------------------------------------------------------

    async def job_fetch(
        self, params: FetchParams, *, now: float | None = None, wait: float = 0.0
    ) -> list[JobRecord]:
        queues = list(dict.fromkeys(params.queues))
        if not queues or params.limit <= 0:
            return []
        if len(queues) == 1:
            if wait > 0 and not self.cluster:
                return await self._lease_when_woken(queues[0], params, now, wait)
            if wait > 0:
                await self.listen(queues, wait)
            return await self._lease(queues[0], params, params.limit, now)
        if wait > 0:
            await self.listen(queues, wait)
        # Several queues, each in its own slot: see what each would hand out, pick the overall
        # first ``limit`` in the reference order, then lease each queue's share.
        peeks = await asyncio.gather(
            *(
                stubs.fetch(self._c, self._fetch_call(queue, params, params.limit, now, "peek"))
                for queue in queues
            )
        )
        candidates: list[tuple[int, int, int, str]] = []
        for queue, peeked in zip(queues, peeks, strict=True):
            self._wakeups.note_due(queue, peeked)
            candidates += [(p, r, q, queue) for p, r, q, _ in stubs.peeked(peeked.rows)]
        shares: dict[str, int] = {}
        for *_, queue in sorted(candidates)[: params.limit]:
            shares[queue] = shares.get(queue, 0) + 1
        leased: list[JobRecord] = []
        for queue in queues:
            if shares.get(queue):
                leased += await self._lease(queue, params, shares[queue], now)
        return sorted(leased, key=lambda j: (j.priority, j.run_at, j.seq))

    def _fetch_call(
        self, queue: str, params: FetchParams, limit: int, now: float | None, mode: str = "lease"
    ) -> stubs.FetchCall:
        return stubs.fetch_call(
            self._q(queue),
            now=now,
            limit=limit,
            lease_seconds=params.lease_seconds,
            worker_id=params.worker_id,
            mode=mode,
            promote_budget=PROMOTE_BUDGET,
        )

    async def _lease(
        self, queue: str, params: FetchParams, limit: int, now: float | None
    ) -> list[JobRecord]:
        call = self._fetch_call(queue, params, limit, now)
        try:
            fetched = await stubs.fetch(self._c, call)
        except asyncio.CancelledError:
            # The script may have run without its reply reaching us: hand back what it leased.
            await asyncio.shield(stubs.release(self._c, call))
            raise
        return await self._received(queue, fetched, now)

    async def _lease_when_woken(
        self, queue: str, params: FetchParams, now: float | None, wait: float
    ) -> list[JobRecord]:
        """Block on the queue's wake marker and lease in the same round trip: the fetch is sent
        right behind the blocking pop on one connection, so the server runs it the moment a job
        arrives (or the wait ends) and both replies come back together."""
        client = self._c
        assert not isinstance(client, RedisCluster)
        keys = self._q(queue)
        wait = self._wakeups.bounded([queue], wait)
        if wait < MIN_BLOCK:  # a job falls due about now: no point in blocking
            return await self._lease(queue, params, params.limit, now)
        call = self._fetch_call(queue, params, params.limit, now)
        try:
            _, reply = await self._wakeups.blocking(client).execute(
                ("BLPOP", keys.wake, wait), stubs.evalsha_command(call.keys, call.args)
            )
        except NoScript:  # the server lost its scripts (restart, SCRIPT FLUSH): load it this way
            return await self._lease(queue, params, params.limit, now)
        except asyncio.CancelledError:
            # The fetch may have run after the pop, leasing jobs nobody will see: hand them back.
            await asyncio.shield(stubs.release(client, call))
            raise
        return await self._received(queue, stubs.fetched(reply), now)

    async def _received(
        self, queue: str, fetched: stubs.Fetched, now: float | None
    ) -> list[JobRecord]:
        keys = self._q(queue)
        self._wakeups.note_due(queue, fetched)
        jobs: list[JobRecord] = []
        for row in fetched.rows:
            try:
                jobs.append(decode_job(queue, row))
            except CorruptJob as exc:
                await self._fail_corrupt(keys, row, exc, now)
        return jobs

    async def _fail_corrupt(
        self, keys: QueueKeys, row: list[bytes | None], exc: CorruptJob, now: float | None
    ) -> None:
        """Fail a leased job that cannot be read, so it neither blocks the queue nor comes back."""
        token = row[1 + JOB_FIELDS.index("t")]
        if token is None:  # not leased after all: nothing to fail
            return
        error = f"CorruptJob: {exc}; fix or purge the job hash (it was failed, not run)"
        log.error("%s", error, extra={"event": "failed", "job_id": exc.job_id})
        finish = FinishJob(exc.job_id, token.decode(), TransitionKind.FAIL, error=error)
        await stubs.finish(self._c, keys, [(finish, cancelled_error(error))], keep=None, now=now)

    # -- leases and outcomes -----------------------------------------------------------------

    async def _group(
        self, items: Sequence[tuple[str, str | None]]
    ) -> list[tuple[QueueKeys, list[int]]]:
        """Positions of (job id, queue if known) items grouped by the queue the job is in, in
        first-seen order; jobs found in no queue are left out."""
        unknown = [job_id for job_id, queue in items if queue is None]
        located = await self._locate(unknown) if unknown else {}
        groups: dict[str, list[int]] = {}
        for n, (job_id, queue) in enumerate(items):
            keys = self._q(queue) if queue is not None else located.get(job_id)
            if keys is not None:
                groups.setdefault(keys.queue, []).append(n)
        return [(self._q(queue), positions) for queue, positions in groups.items()]

    async def job_extend_leases(
        self, leases: Sequence[Lease], lease_seconds: float, *, now: float | None = None
    ) -> ExtendResult:
        if not leases:
            return ExtendResult((), ())
        outcome = [2] * len(leases)  # lost unless a queue script says otherwise
        for keys, positions in await self._group([(le.job_id, le.queue) for le in leases]):
            pairs = [(leases[n].job_id, leases[n].token) for n in positions]
            replies = await stubs.extend(self._c, keys, pairs, lease_seconds, now)
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
        validate_finishes(finishes)
        if not finishes:
            return []
        statuses = [TransitionStatus.NOT_FOUND] * len(finishes)
        for keys, positions in await self._group([(f.job_id, f.queue) for f in finishes]):
            batch = [(finishes[n], cancelled_error(finishes[n].error)) for n in positions]
            replies = await stubs.finish(
                self._c, keys, batch, keep=retention.completed_max_count, now=now
            )
            for n, status in zip(positions, replies, strict=True):
                statuses[n] = status
        return [TransitionResult(f.job_id, s) for f, s in zip(finishes, statuses, strict=True)]

    # -- maintenance -------------------------------------------------------------------------

    async def _oldest(
        self, states: Sequence[JobState], bound: float, limit: int, *, inclusive: bool
    ) -> list[_across.Candidate]:
        queues = [self._q(queue) for queue in await self._known()]
        return await _across.oldest(self._c, queues, states, bound, limit, inclusive=inclusive)

    async def job_rescue_expired(
        self, *, max_stalls: int, limit: int, now: float | None = None
    ) -> RescueResult:
        if limit <= 0:
            return RescueResult((), ())
        at = await self._server_now(now)
        chosen = await self._oldest([JobState.ACTIVE], at, limit, inclusive=True)
        outcomes: dict[bytes, str] = {}
        for keys, pairs in _across.by_queue(chosen):
            members = [member for _, member in pairs]
            replies = await stubs.rescue(
                self._c,
                keys,
                members,
                max_stalls=max_stalls,
                stalled_error=stalled_error_template(max_stalls),
                cancelled_error=cancelled_error(LOST_WHILE_CANCELLING),
                now=at,
            )
            outcomes.update(zip(members, replies, strict=True))
        result: dict[str, list[str]] = {"requeued": [], "failed": [], "cancelled": []}
        for *_, member in chosen:
            outcome = outcomes.get(member)
            if outcome in result:
                result[outcome].append(member[SEQ_DIGITS:].decode())
        return RescueResult(
            tuple(result["requeued"]), tuple(result["failed"]), tuple(result["cancelled"])
        )

    async def job_promote_due(self, *, limit: int, now: float | None = None) -> int:
        if limit <= 0:
            return 0
        at = await self._server_now(now)
        due = [JobState.SCHEDULED, JobState.RETRYING]
        chosen = await self._oldest(due, at, limit, inclusive=True)
        moved = 0
        for keys, pairs in _across.by_queue(chosen):
            named = [(STATE_SETS[state], member) for state, member in pairs]
            moved += await stubs.promote(self._c, keys, named, at)
        return moved

    async def job_prune_finished(
        self, retention: Retention, *, limit: int, now: float | None = None
    ) -> int:
        if limit <= 0:
            return 0
        at = await self._server_now(now)
        removed = 0
        ages = (
            (JobState.COMPLETED, retention.completed_max_age),
            (JobState.FAILED, retention.failed_max_age),
            (JobState.CANCELLED, retention.cancelled_max_age),
        )
        for state, max_age in ages:
            if max_age is None or removed >= limit:
                continue
            chosen = await self._oldest([state], at - max_age, limit - removed, inclusive=False)
            for keys, pairs in _across.by_queue(chosen):
                members = [member for _, member in pairs]
                removed += await stubs.prune_members(self._c, keys, state, members)
        if retention.completed_max_count is not None:
            for queue in await self._known():
                if removed >= limit:
                    break
                removed += await stubs.prune_trim(
                    self._c,
                    self._q(queue),
                    JobState.COMPLETED,
                    retention.completed_max_count,
                    limit - removed,
                )
        return removed

    # -- operators ---------------------------------------------------------------------------

    async def job_cancel_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        results: list[ChangeResult] = [
            ChangeResult(job_id, ChangeStatus.NOT_FOUND, None) for job_id in ids
        ]
        for keys, positions in await self._group([(job_id, None) for job_id in ids]):
            batch = [ids[n] for n in positions]
            replies = await stubs.cancel(self._c, keys, batch, CANCELLED_ERROR, now)
            for n, change in zip(positions, replies, strict=True):
                results[n] = change
        return results

    async def job_retry_many(
        self, ids: Sequence[str], *, now: float | None = None
    ) -> list[ChangeResult]:
        results: list[ChangeResult] = [
            ChangeResult(job_id, ChangeStatus.NOT_FOUND, None) for job_id in ids
        ]
        located = await self._locate(ids) if ids else {}
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

    async def job_purge(self, params: PurgeParams, *, now: float | None = None) -> int:
        if not params.states:
            return 0
        queues = [params.queue] if params.queue is not None else await self._known()
        deleted = 0
        for queue in queues:
            keys = self._q(queue)
            for state in dict.fromkeys(params.states):
                if params.finished_before is not None and state not in TERMINAL_STATES:
                    continue  # unfinished jobs have no finish time to compare
                while True:
                    n, removed = await stubs.purge(
                        self._c, keys, state, params.finished_before, CHUNK
                    )
                    deleted += n
                    if removed < CHUNK:
                        break
        return deleted

    # -- reading -----------------------------------------------------------------------------

    async def job_get_many(self, ids: Sequence[str]) -> list[JobRecord | None]:
        if not ids:
            return []
        queues = [self._q(name) for name in await self._known()]
        unique = list(dict.fromkeys(ids))
        rows = await stubs.read_jobs(self._c, [(q, i) for i in unique for q in queues])
        found: dict[str, JobRecord] = {}
        for (keys, job_id), row in zip(((q, i) for i in unique for q in queues), rows, strict=True):
            if row is not None and job_id not in found:
                found[job_id] = decode_job(keys.queue, row, strict=False)
        return [found.get(job_id) for job_id in ids]

    async def job_list(self, params: ListParams) -> list[JobRecord]:
        if params.limit <= 0:
            return []
        queues = [
            self._q(q) for q in await self._known() if params.queue is None or q == params.queue
        ]
        chosen = await _across.newest(
            self._c,
            queues,
            params.states or tuple(JobState),
            before_seq=params.before_seq,
            name=params.name,
            limit=params.limit,
        )
        rows = await stubs.read_jobs(self._c, [(keys, job_id) for _, job_id, keys in chosen])
        return [
            decode_job(keys.queue, row, strict=False)
            for (_, _, keys), row in zip(chosen, rows, strict=True)
            if row is not None
        ]

    async def job_count_by_state(self, queue: str | None = None) -> dict[JobState, int]:
        names = [queue] if queue is not None else await self._known()
        totals = dict.fromkeys(JobState, 0)
        for queue_state in await stubs.queue_states(self._c, [self._q(n) for n in names]):
            for state, n in queue_state.counts.items():
                totals[state] += n
        return totals

    # -- queues ------------------------------------------------------------------------------

    async def queue_list(self) -> list[QueueInfo]:
        names = await self._known()
        states = await stubs.queue_states(self._c, [self._q(name) for name in names])
        return [
            QueueInfo(name, state.paused, state.counts)
            for name, state in zip(names, states, strict=True)
        ]

    async def queue_pause(self, queue: str) -> None:
        await self._register(queue)
        await stubs.pause(self._c, self._q(queue))

    async def queue_resume(self, queue: str) -> None:
        await stubs.resume(self._c, self._q(queue))

    # -- workers and leadership --------------------------------------------------------------

    async def worker_heartbeat(
        self, info: WorkerInfo, *, ttl: float, now: float | None = None
    ) -> None:
        await stubs.heartbeat(self._c, self._ns, info, ttl, now)

    async def worker_deregister(self, worker_id: str) -> None:
        await stubs.deregister(self._c, self._ns, worker_id)

    async def worker_list(self, *, now: float | None = None) -> list[WorkerInfo]:
        return await stubs.live_workers(self._c, self._ns, now)

    async def leader_acquire(
        self, name: str, holder: str, *, ttl: float, now: float | None = None
    ) -> bool:
        return await stubs.leader_acquire(self._c, self._ns, name, holder, ttl, now)

    async def leader_release(self, name: str, holder: str) -> None:
        await stubs.leader_release(self._c, self._ns, name, holder)

    # -- wake-ups (see ._wakeups) ---------------------------------------------------------------

    def notify(self, queue: str) -> None:
        self._wakeups.notify(queue)

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        await self._wakeups.listen(queues, timeout)
