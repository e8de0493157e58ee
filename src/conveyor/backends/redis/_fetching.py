"""Leasing jobs: one queue in one script call (behind a blocking wait when idle), several
queues by peeking at each and leasing each one's share; fetch receipts; jobs that cannot be read.

Every lease call leaves a receipt (the ids it leased), so that a call sent again after a lost
reply returns the same jobs instead of leasing more, and a caller that gave up can hand them
back. A receipt lasts :data:`RECEIPT_TTL` (or the lease, if longer): well beyond the reply
timeout and the client's retries. The driver's next lease of the same queue deletes it, in the
same script call, so receipts do not pile up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from redis.asyncio.cluster import RedisCluster

from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._records import JOB_FIELDS, CorruptJob, decode_job
from conveyor.backends.redis._resp import NoScript
from conveyor.backends.redis._store import Store
from conveyor.backends.redis._wakeups import MIN_BLOCK, Wakeups
from conveyor.drivers.common import first_in_run_order, run_order
from conveyor.drivers.records import FetchParams, FinishJob, JobRecord, TransitionKind

log = logging.getLogger("conveyor.redis")

# Due jobs promoted by one fetch: enough for any realistic backlog to drain in a few fetches,
# bounded so that one script never blocks the server for long.
PROMOTE_BUDGET: Final = 1000
# How long a fetch receipt is kept at least: beyond the reply timeout (30 s by default) plus the
# client's retries of the call, so a retried call finds it.
RECEIPT_TTL: Final = 300.0


class Fetcher:
    """The fetch side of one driver: what it leases, and its last receipt of each queue."""

    def __init__(self, store: Store, wakeups: Wakeups) -> None:
        self._store = store
        self._wakeups = wakeups
        self._receipts: dict[str, str] = {}  # queue -> receipt of the last lease to delete

    async def fetch(self, params: FetchParams, now: float | None, wait: float) -> list[JobRecord]:
        queues = list(dict.fromkeys(params.queues))
        if not queues or params.limit <= 0:
            return []
        if len(queues) == 1:
            if wait > 0 and not self._store.cluster:
                return await self._lease_when_woken(queues[0], params, now, wait)
            if wait > 0:
                await self._wakeups.listen(queues, wait)
            return await self._lease(queues[0], params, params.limit, now)
        if wait > 0:
            await self._wakeups.listen(queues, wait)
        # Several queues, each in its own slot: see what each would hand out, pick the overall
        # first ``limit`` in the reference order, then lease each queue's share.
        client = self._store.client
        peeks = await asyncio.gather(
            *(
                stubs.fetch(client, self._call(queue, params, params.limit, now, "peek"))
                for queue in queues
            )
        )
        candidates: list[tuple[tuple[int, float, int], str]] = []
        for queue, peeked in zip(queues, peeks, strict=True):
            self._wakeups.note_due(queue, peeked)
            candidates += [((p, r, q), queue) for p, r, q, _ in stubs.peeked(peeked.rows)]
        shares: dict[str, int] = {}
        for queue in first_in_run_order(candidates, params.limit):
            shares[queue] = shares.get(queue, 0) + 1
        leased: list[JobRecord] = []
        for queue in queues:
            if shares.get(queue):
                leased += await self._lease(queue, params, shares[queue], now)
        return sorted(leased, key=run_order)

    def _call(
        self, queue: str, params: FetchParams, limit: int, now: float | None, mode: str = "lease"
    ) -> stubs.FetchCall:
        return stubs.fetch_call(
            self._store.keys(queue),
            now=now,
            limit=limit,
            lease_seconds=params.lease_seconds,
            worker_id=params.worker_id,
            mode=mode,
            promote_budget=PROMOTE_BUDGET,
            receipt_ttl=max(params.lease_seconds, RECEIPT_TTL),
            # Handed to this call only: should it fail, the receipt expires by itself.
            previous_receipt=self._receipts.pop(queue, None) if mode == "lease" else None,
            rate=next(((r.count, r.per) for r in params.rate_limits if r.queue == queue), None),
        )

    async def _lease(
        self, queue: str, params: FetchParams, limit: int, now: float | None
    ) -> list[JobRecord]:
        call = self._call(queue, params, limit, now)
        client = self._store.client
        try:
            fetched = await stubs.fetch(client, call)
        except asyncio.CancelledError:
            # The script may have run without its reply reaching us: hand back what it leased.
            await asyncio.shield(stubs.release(client, call))
            raise
        return await self._received(queue, call, fetched, now)

    async def _lease_when_woken(
        self, queue: str, params: FetchParams, now: float | None, wait: float
    ) -> list[JobRecord]:
        """Block on the queue's wake marker and lease in the same round trip: the fetch is sent
        right behind the blocking pop on one connection, so the server runs it the moment a job
        arrives (or the wait ends) and both replies come back together."""
        client = self._store.client
        assert not isinstance(client, RedisCluster)
        keys = self._store.keys(queue)
        wait = self._wakeups.bounded([queue], wait)
        if wait < MIN_BLOCK:  # a job falls due about now: no point in blocking
            return await self._lease(queue, params, params.limit, now)
        call = self._call(queue, params, params.limit, now)
        try:
            _, reply = await self._wakeups.blocking(client).execute(
                ("BLPOP", keys.wake, wait), stubs.evalsha_command(call)
            )
        except NoScript:  # the server lost its scripts (restart, SCRIPT FLUSH): load it this way
            fetched = await stubs.fetch(client, call)
            return await self._received(queue, call, fetched, now)
        except asyncio.CancelledError:
            # The fetch may have run after the pop, leasing jobs nobody will see: hand them back.
            await asyncio.shield(stubs.release(client, call))
            raise
        return await self._received(queue, call, stubs.fetched(reply), now)

    async def _received(
        self, queue: str, call: stubs.FetchCall, fetched: stubs.Fetched, now: float | None
    ) -> list[JobRecord]:
        self._wakeups.note_due(queue, fetched)
        if fetched.rows:
            self._receipts[queue] = call.receipt
        for job_id, why in fetched.dropped:
            log.warning(
                "queue %r: dropped the entry of job %r from the queue: %s",
                queue,
                job_id,
                why,
                extra={"event": "dropped", "job_id": job_id, "queue": queue, "error": why},
            )
        jobs: list[JobRecord] = []
        for row in fetched.rows:
            try:
                jobs.append(decode_job(queue, row))
            except CorruptJob as exc:
                await self._fail_corrupt(queue, row, exc, now)
        return jobs

    async def _fail_corrupt(
        self, queue: str, row: list[bytes | None], exc: CorruptJob, now: float | None
    ) -> None:
        """Fail a leased job that cannot be read, so it neither blocks the queue nor comes back."""
        token = row[1 + JOB_FIELDS.index("t")]
        if token is None:  # not leased after all: nothing to fail
            return
        error = f"CorruptJob: {exc}; fix or purge the job hash (it was failed, not run)"
        log.error("%s", error, extra={"event": "failed", "job_id": exc.job_id})
        finish = FinishJob(exc.job_id, token.decode(), TransitionKind.FAIL, error=error)
        await stubs.finish(
            self._store.client, self._store.keys(queue), [finish], keep=None, now=now
        )
