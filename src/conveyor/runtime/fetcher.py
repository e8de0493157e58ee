"""The fetch loop: claims what the worker has room for, and decides what to start.

* **Room.** A fetch is worth its round trip once room for a quarter of the concurrency is free
  (or any room after :data:`PREFETCH_WAIT`, or when nothing runs), so a busy worker fetches in
  batches; and only while the completer's backlog is below its bound, so outcomes that cannot
  be written stop the worker from taking more work. Room counts the jobs the worker may lease
  ahead of a free slot (``runtime.prefetch``): those wait, held, and start as slots free.
* **Idle.** After an empty fetch the next one waits for work (a backend may wait and lease in
  the same round trip). A fetch is never cancelled, which could lose what it leased: ``stop()``
  wakes it instead.
* **Stale replies.** A reply that arrives so late that the lease it carries may have run out
  (a network partition that healed, a stalled connection) is not run: another worker may hold
  the job by now. Its jobs are handed back, fenced by their tokens.
* **Suspects run alone.** A job that has been lost by a worker before (``stalls > 0``) may be
  what killed that worker. It waits until nothing else runs and every other outcome has been
  written, is marked ``isolated`` in the backend, and runs with nothing beside it until its own
  outcome is written; only then is a loss evidence against it (see
  :mod:`conveyor.core.rescue`). A worker keeps one suspect at a time and hands the others
  back at once, for other workers to take, rather than holding their leases while they wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from conveyor._config import WorkerConfig
from conveyor._errors import ConveyorError
from conveyor.core.cancellation import stop_if_cancelled
from conveyor.core.unknown import UNKNOWN_GRACE
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import FetchParams, JobRecord, JobState, RateLimit
from conveyor.runtime.completer import Completer
from conveyor.runtime.rates import sleep_on
from conveyor.runtime.waiting import first_of

log = logging.getLogger("conveyor.worker")

# How long a free slot may wait for others to free up, so that they are filled by one fetch.
PREFETCH_WAIT = 0.005
# The first delay of a look again after a group's turn came and a fetch found nothing; each
# later one doubles, up to the poll interval (see Fetcher._group_held).
TURN_RECHECK_FIRST = 0.05


def next_recheck(delay: float, poll_interval: float) -> float | None:
    """The delay of the look after one ``delay`` after a group's turn that found nothing:
    double it (from :data:`TURN_RECHECK_FIRST`), or None once it would reach the poll
    interval, where polling takes over. So the looks after a turn are at most a few."""
    later = max(2 * delay, TURN_RECHECK_FIRST)
    return later if later < poll_interval else None


@dataclass(frozen=True, slots=True)
class FetcherHooks:
    """What the fetcher asks of the worker that owns it."""

    taken: Callable[[], int]  # jobs taken on: running, or leased ahead of a free slot
    hold: Callable[[JobRecord], None]  # keep the lease renewed while the job waits to start
    start: Callable[[JobRecord], None]  # run the job (its lease is renewed from then on)
    offer: Callable[[JobRecord], None]  # run the job once a slot is free (at once if one is)
    capacity: Callable[[], int]  # jobs the worker may take on now (slots + leased ahead)
    hand_back: Callable[[Sequence[JobRecord], str], None]  # requeue leased jobs, with a reason
    isolate: Callable[[JobRecord], Awaitable[bool]]  # mark a suspect isolated; false: lost
    # Holds made inside are told to the lease renewer together, when the block ends.
    batch: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext


class Fetcher:
    def __init__(
        self,
        driver: Driver,
        config: WorkerConfig,
        *,
        worker_id: str,
        queues: tuple[str, ...],
        names: tuple[str, ...],
        completer: Completer,
        hooks: FetcherHooks,
        stopping: asyncio.Event,
        slot_freed: asyncio.Event,
        rate_limits: tuple[RateLimit, ...] = (),
        grouped: bool = False,
    ) -> None:
        self._driver = driver
        self._config = config
        self._worker_id = worker_id
        self._queues = queues
        self._names = names
        self._completer = completer
        self._hooks = hooks
        self._stopping = stopping
        self._slot_freed = slot_freed
        self._idle = False  # the last fetch found nothing: the next one waits for work
        self._suspects: collections.deque[JobRecord] = collections.deque()
        self._rate_limits = rate_limits
        self._grouped = grouped  # some served definition puts its jobs in groups
        # Seconds until a held rate limit lets a job start: the next wait for work ends then.
        self._rate_wait: float | None = None
        # Set while a group's turn may be still to come (the last question about held groups
        # named one, or jobs of a group were leased since): the delay of the next look should
        # the question name none (see _group_held). None: no turn is awaited.
        self._recheck: float | None = None

    @property
    def waiting(self) -> int:
        """Jobs leased but not started yet (suspects waiting to run alone)."""
        return len(self._suspects)

    async def run(self) -> None:
        """Fetch and start jobs until the worker stops (or, with ``burst``, has drained)."""
        failures = 0
        try:
            while not self._stopping.is_set():
                stop_if_cancelled()
                try:
                    drained = await self._step()
                    failures = 0
                except Exception as exc:  # a broken connection must not end the worker
                    failures += 1
                    pause = min(0.1 * 2**failures, 5.0)
                    log.warning(
                        "fetching jobs failed, retrying in %.1fs: %s",
                        pause,
                        exc,
                        exc_info=not isinstance(exc, ConveyorError),
                    )
                    await first_of(asyncio.sleep(pause), self._stopping.wait())
                    continue
                if drained:
                    log.info("queues drained, burst worker exiting", extra={"event": "drained"})
                    return
        finally:
            if self._suspects:
                self._hooks.hand_back(list(self._suspects), "the worker is stopping")
                self._suspects.clear()

    async def _step(self) -> bool:
        if self._suspects:
            await self._run_suspect()
            return False
        return await self._fetch_once()

    async def _run_suspect(self) -> None:
        """Start the suspect once nothing else runs, and wait until its outcome is written."""
        await self._wait_until_idle()
        if self._stopping.is_set():
            return
        record = self._suspects.popleft()
        if await self._hooks.isolate(record):
            log.warning(
                "job %s was lost by a worker before: running it alone",
                record.id,
                extra={"event": "isolated", "job_id": record.id, "job_name": record.name},
            )
            self._hooks.start(record)
            await self._wait_until_idle()

    async def _wait_until_idle(self) -> None:
        """Wait until no job runs and every outcome submitted has been written: a crash while
        an outcome waits to be written loses that job too, so it counts as running."""
        while not self._stopping.is_set():
            if self._hooks.taken():
                self._slot_freed.clear()
                await first_of(self._slot_freed.wait(), self._stopping.wait())
            elif self._completer.backlog:
                await first_of(self._completer.wait_until_written(), self._stopping.wait())
            else:
                return

    async def _fetch_once(self) -> bool:
        """Claim what there is room for, or wait for room or work; true once a burst worker has
        nothing left to do."""
        cfg = self._config
        await self._wait_for_room()
        free = self._hooks.capacity() - self._hooks.taken()
        if free <= 0 or self._stopping.is_set():
            return False
        params = FetchParams(
            self._queues,
            free,
            self._worker_id,
            cfg.lease_seconds,
            self._names,
            UNKNOWN_GRACE,
            rate_limits=self._rate_limits,
        )
        wait = cfg.poll_interval if self._idle else 0.0
        if wait and self._rate_wait is not None:
            wait = min(wait, self._rate_wait)
        self._rate_wait = None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        records = await self._driver.job_fetch(params, now=cfg.clock.now(), wait=wait)
        # The lease began after the request was sent and, at the latest, once the wait ended.
        elapsed = loop.time() - sent - wait
        if records and self._stopping.is_set():
            self._hooks.hand_back(records, "the worker is stopping")
            return False
        if records and elapsed > self._stale_after():
            log.warning(
                "a fetch reply took %.1fs to arrive, so the leases it carries may have run out "
                "(another worker may be running these jobs): handing %d job(s) back",
                elapsed,
                len(records),
                extra={"event": "stale_fetch", "worker_id": self._worker_id},
            )
            self._hooks.hand_back(records, "stale fetch reply")
            return False
        extra_suspects: list[JobRecord] = []
        with self._hooks.batch():  # the renewer hears of all these leases at once
            for record in records:
                if record.stalls == 0:
                    self._hooks.offer(record)
                elif self._suspects:
                    extra_suspects.append(record)
                else:
                    self._hooks.hold(record)
                    self._suspects.append(record)
        if extra_suspects:
            self._hooks.hand_back(extra_suspects, "another job waits to run alone here")
        if self._rate_limits and len(records) < free and await self._rate_held():
            self._idle = False
            return False
        if self._grouped and any(record.group is not None for record in records):
            self._recheck = 0.0  # a start may hold its group until a turn to come
        if self._grouped and len(records) < free:
            await self._group_held()
        if records:
            self._idle = False
            if len(records) < free or self._hooks.capacity() <= cfg.concurrency:
                # Let the jobs begin before the next fetch's round trip. But when the fetch was
                # full (more jobs are likely waiting) and the worker may lease ahead, the next
                # fetch goes first, if there is room for it: the jobs that ran while this one
                # was in flight freed their slots, so these filled only part of the capacity.
                # That round trip then overlaps the jobs just started.
                await asyncio.sleep(0)
            return False
        if cfg.burst and not self._hooks.taken() and await self._drained():
            return True
        self._idle = True
        return False

    async def _rate_held(self) -> bool:
        """After a fetch that got less than it asked for: if a rate limit held it back, learn
        when the next start is allowed. When every served queue is held, sleep until then (on
        the worker's clock) and return true; otherwise the next wait for work ends then.
        Waiting for a notification instead would wait for one that never comes (a held queue
        is not woken), and fetching again at once would poll."""
        cfg = self._config
        now = cfg.clock.now()
        waits = await self._driver.rate_limit_wait(self._rate_limits, now=now)
        if not waits:
            return False
        pause = min(waits.values())
        if any(queue not in waits for queue in self._queues):
            self._rate_wait = pause
            return False
        await sleep_on(cfg.clock, pause, self._stopping, since=now)
        return True

    async def _group_held(self) -> None:
        """After a short fetch of a worker that serves grouped jobs: a group whose rate window
        is full or that a handler blocked becomes runnable with no notification, so the next
        wait for work ends when the first such group's turn comes.

        The question names only turns still to come. When a turn was awaited and it names none,
        the turn has come, but the fetch may not have seen it: it came after the fetch (or
        during a stall between the two calls), or the fetch passed over the group because
        another transaction held its record (PostgreSQL's ``SKIP LOCKED``: a finish, a retry,
        another worker's fetch), and what lets go of it sends no notification. So the worker
        looks again at once, then after delays that double from :data:`TURN_RECHECK_FIRST`
        until one reaches the poll interval, where polling takes over: a few looks, not a wait
        of a whole poll interval for a job whose turn has come."""
        cfg = self._config
        pause = await self._driver.group_wait(self._queues, names=self._names, now=cfg.clock.now())
        if pause is not None:
            self._recheck = 0.0
        elif self._recheck is not None:
            pause, self._recheck = self._recheck, next_recheck(self._recheck, cfg.poll_interval)
        if pause is not None:
            self._rate_wait = pause if self._rate_wait is None else min(self._rate_wait, pause)

    def _stale_after(self) -> float:
        """How old a reply's leases may be and still be started: the lease keeper first renews
        them up to one renewal interval later, and a tenth of the lease is kept as a margin for
        clock drift and the renewal's own round trip."""
        lease = self._config.lease_seconds
        return max(lease / 4, lease - self._config.renew_interval - lease / 10)

    async def _wait_for_room(self) -> None:
        """Wait until a fetch is worth its round trip (see the module's docstring)."""
        enough = max(1, self._config.concurrency // 4)
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if not self._completer.has_room:
                await first_of(self._completer.wait_for_room(), self._stopping.wait())
                continue
            running = self._hooks.taken()
            free = self._hooks.capacity() - running
            if free >= enough or not running:
                return
            self._slot_freed.clear()
            if free <= 0:
                await self._slot_freed.wait()
                continue
            if deadline is None:
                deadline = loop.time() + PREFETCH_WAIT
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slot_freed.wait()
            except TimeoutError:
                return

    async def _drained(self) -> bool:
        """Nothing runnable or running in the served queues that are not paused. Retries of
        work already started count (they are part of draining); jobs scheduled for later do
        not, so a burst worker never waits for tomorrow's job."""
        if self._completer.backlog or self._suspects:
            return False
        busy = (JobState.QUEUED, JobState.ACTIVE, JobState.RETRYING)
        # One call: queue_list carries both the paused flags and the counts by state.
        return not any(
            info.counts.get(state, 0)
            for info in await self._driver.queue_list()
            if info.name in self._queues and not info.paused
            for state in busy
        )
