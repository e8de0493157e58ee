"""Coalesced inserts: concurrent one-job enqueues of one process share round trips.

A web server enqueues from many requests at once, each an awaited ``queue.enqueue``. Written
one by one, each pays a round trip of its own; here, calls that arrive while a write is in
flight wait for it and then go together in the next ``job_insert_many`` (the backend's bulk
path, which acts as if its jobs were inserted one after another). A call that finds nothing in
flight is written at once, so a lone call waits for no timer and no other call. A driver that
can send a batch from the calling task (:mod:`conveyor.drivers.started`) gets several batches
in flight, each sent as it fills, so the server's work overlaps the callers' own.

Every caller keeps its own outcome. A job is checked on its own before it joins a batch, so a
job the backend would refuse fails its caller only; if a batch is refused anyway
(``InvalidArgument``: the contract says such a batch wrote nothing) each of its jobs is written
alone, to find the one at fault. Any other failure of a batch write (the connection dropped, the
server away) is every one of its callers' error, exactly as each would have seen it alone: it is
not retried here. The drivers' own retries are what they are on the single path: the lean Redis
client and the PostgreSQL pool send a write again after a dropped connection, which is safe
because an insert is deduplicated by job id (a job that was written before the drop is reported
as a duplicate, never written twice).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence

from conveyor._errors import BackendUnavailable, InvalidArgument
from conveyor.drivers.common import check_new_jobs, check_now
from conveyor.drivers.records import InsertResult, NewJob

# Jobs per write: large enough that a busy process needs few round trips, small enough that
# one write (a Lua script, a statement) never holds the server for long.
MAX_BATCH = 256
# Callers waiting for a write; past this a caller is written on its own (as without
# coalescing), so a burst cannot grow the list without bound.
MAX_WAITING = 4096

InsertMany = Callable[[Sequence[NewJob], float | None], Awaitable[list[InsertResult]]]
StartInsert = Callable[[Sequence[NewJob], float | None], asyncio.Future[list[InsertResult]] | None]

# With a driver that sends a batch from the calling task (see conveyor.drivers.started): how
# many writes may be in flight at once, and how many waiting calls make a batch go before the
# loop's pass ends. Measured on Redis with windows of 100 calls gathered at a time (20,000
# jobs, medians of 5 runs): one write at a time 21.5-24.7k jobs/s; sent at 25 waiting, 4 in
# flight, 27.6-29.5k; at 20, 32 and 40 (3 in flight) 28.4k, 29.6k and 28.1k; 25 with 8 in
# flight 29.2k; 16 with 6 in flight 25.9k (smaller writes cost the server more per job).
IN_FLIGHT = 4
SEND_AT = 25


class _Waiter:
    __slots__ = ("future", "job", "now")

    def __init__(self, job: NewJob, now: float | None, future: asyncio.Future[InsertResult]):
        self.job = job
        self.now = now
        self.future = future


class Coalescer:
    """Batches the one-job inserts made on one event loop (a queue used from another loop
    writes directly: its connections belong to that loop).

    Without ``start_insert``, one write is in flight at a time, and the calls that come
    meanwhile go together in the next. With it, up to :data:`IN_FLIGHT` batches are in flight:
    a batch goes as soon as :data:`SEND_AT` calls wait, sent by ``start_insert`` from the task
    whose call filled it, and whatever waits at the end of the loop's pass goes then; a batch
    ``start_insert`` cannot send goes the usual way, one write at a time."""

    def __init__(
        self,
        insert_many: InsertMany,
        *,
        start_insert: StartInsert | None = None,
        max_batch: int = MAX_BATCH,
        max_waiting: int = MAX_WAITING,
        in_flight: int = IN_FLIGHT,
        send_at: int = SEND_AT,
    ) -> None:
        self._insert_many = insert_many
        self._start_insert = start_insert
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.in_flight = in_flight if start_insert is not None else 1
        self.send_at = send_at
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: collections.deque[_Waiter] = collections.deque()
        self._writes = 0  # writes of this coalescer in flight (a lone call's, a batch's)
        self._drainer: asyncio.Task[None] | None = None  # writes batches one after another
        self._launched: set[asyncio.Task[None]] = set()  # writes in tasks of their own
        self._flush_due = False  # a look at the waiting calls is due at the pass's end
        # start_insert could not send the last batch it was offered: not offered another until
        # a write ends (a batch it cannot send, one with a dedup key say, would otherwise be
        # built and put back again by every call that comes meanwhile).
        self._start_refused = False

    async def insert(self, job: NewJob, now: float | None) -> InsertResult:
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            self._loop, self._waiting, self._writes = loop, collections.deque(), 0
            self._drainer, self._launched, self._flush_due = None, set(), False
            self._start_refused = False
        elif loop is not self._loop:
            (result,) = await self._insert_many([job], now)
            return result
        if self._writes == 0:
            # Nothing in flight: this call goes at once; calls that come meanwhile queue up.
            self._writes += 1
            try:
                (result,) = await self._insert_many([job], now)
            finally:
                # Not when the loop it began on was closed with it pending (it ends when it
                # is collected): the count is the new loop's by then.
                if self._loop is loop:
                    self._writes -= 1
                    self._next()
            return result
        if len(self._waiting) >= self.max_waiting:
            (result,) = await self._insert_many([job], now)
            return result
        # Refused here, for this caller alone, before it can share a batch with others (a lone
        # call above is checked by the driver, and its error is its own already).
        check_now(now)
        check_new_jobs([job])
        future: asyncio.Future[InsertResult] = loop.create_future()
        self._waiting.append(_Waiter(job, now, future))
        if self._start_insert is not None:
            if len(self._waiting) >= self.send_at:
                self._start_batches()
            elif not self._flush_due:
                self._flush_due = True
                loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_due = False
        self._start_batches()

    def _next(self) -> None:
        """A write ended: start what waits, as far as the writes in flight allow."""
        if self._start_insert is not None:
            self._start_refused = False
            self._start_batches()
        elif self._writes == 0:
            self._start_drain()

    def _start_batches(self) -> None:
        """Send waiting calls in batches through ``start_insert`` while fewer than
        ``in_flight`` writes are in flight. A batch it cannot send is written the usual way,
        one such write at a time (when nothing else is in flight; else a write that ends looks
        again); that write refreshes what ``start_insert`` found missing (the Redis driver's
        list of queues, for one), and the batches after it are started again."""
        assert self._start_insert is not None
        if self._start_refused:  # until a write ends (``_next``)
            return
        while self._waiting and self._writes < self.in_flight:
            batch = self._next_batch()
            if not batch:
                return
            try:
                sent = self._start_insert([w.job for w in batch], batch[0].now)
            except Exception:  # it should not raise: the usual write reports what is wrong
                sent = None
            if sent is None:
                if self._writes:
                    self._waiting.extendleft(reversed(batch))
                    self._start_refused = True
                else:
                    self._launch(batch, None)
                return
            self._launch(batch, sent)

    def _launch(
        self, batch: list[_Waiter], sent: asyncio.Future[list[InsertResult]] | None
    ) -> None:
        """Write ``batch`` in a task of its own (``sent``: already sent, its results to come).
        Counted as in flight until the task is done, however it ends: a task cancelled before
        its first step runs none of its own code."""
        assert self._loop is not None
        self._writes += 1
        task = self._loop.create_task(self._write(batch, sent))
        self._launched.add(task)
        task.add_done_callback(lambda done: self._launched_done(done, batch, sent))

    def _launched_done(
        self,
        task: asyncio.Task[None],
        batch: list[_Waiter],
        sent: asyncio.Future[list[InsertResult]] | None,
    ) -> None:
        self._writes -= 1
        self._launched.discard(task)
        if task.cancelled():
            if sent is not None:  # cancelled before it awaited the reply: nobody will
                sent.cancel()
                if sent.done() and not sent.cancelled():
                    sent.exception()  # retrieved, so asyncio does not report it
            self._abandon(batch)
        else:
            self._next()

    def _abandon(self, batch: list[_Waiter]) -> None:
        """A write was cancelled (the loop is shutting down, or its tasks are being
        cancelled): its callers and those still waiting are cancelled with it rather than left
        waiting for a write that nobody will start."""
        for waiter in (*batch, *self._waiting):
            waiter.future.cancel()
        self._waiting.clear()

    def _start_drain(self) -> None:
        if self._waiting and self._drainer is None:
            assert self._loop is not None
            self._writes += 1
            self._drainer = self._loop.create_task(self._drain(), name="conveyor-enqueue-batch")
            self._drainer.add_done_callback(self._drained)

    async def _drain(self) -> None:
        while batch := self._next_batch():
            await self._write(batch)

    def _drained(self, task: asyncio.Task[None]) -> None:
        # A callback, not a ``finally``: it runs even for a drain cancelled before it started.
        # Calls may have come between the drain's end and this callback: they are started here.
        self._writes -= 1
        self._drainer = None
        if task.cancelled():
            self._abandon([])
        else:
            self._next()

    def _next_batch(self) -> list[_Waiter]:
        """Up to ``max_batch`` waiting calls with the same ``now`` (one write takes one), in
        the order they came; callers that gave up (cancelled) are dropped."""
        batch: list[_Waiter] = []
        waiting = self._waiting
        while waiting and len(batch) < self.max_batch:
            waiter = waiting[0]
            if waiter.future.done():
                waiting.popleft()
                continue
            if batch and waiter.now != batch[0].now:
                break
            batch.append(waiting.popleft())
        return batch

    async def _write(
        self, batch: list[_Waiter], sent: Awaitable[list[InsertResult]] | None = None
    ) -> None:
        try:
            if sent is None:
                sent = self._insert_many([w.job for w in batch], batch[0].now)
            results = await sent
        except InvalidArgument as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            # Refused whole, so nothing of it was written: each job alone finds the one at fault.
            try:
                for waiter in batch:
                    await self._write([waiter])
            except asyncio.CancelledError:
                _cancel(batch)  # those not written yet
                raise
            return
        except asyncio.CancelledError:
            _cancel(batch)
            raise
        except Exception as exc:
            for waiter in batch:
                _fail(waiter, exc)
            return
        for waiter, result in zip(batch, results, strict=True):
            if not waiter.future.done():
                waiter.future.set_result(result)


def _cancel(batch: list[_Waiter]) -> None:
    for waiter in batch:
        waiter.future.cancel()


def _fail(waiter: _Waiter, error: BaseException) -> None:
    if not waiter.future.done():
        waiter.future.set_exception(error)


BlockingInsertMany = Callable[[Sequence[NewJob], float | None], list[InsertResult]]


class _ThreadWaiter:
    __slots__ = ("batch", "done", "error", "job", "now", "result")

    def __init__(self, job: NewJob, now: float | None) -> None:
        self.job = job
        self.now = now
        self.done = threading.Event()
        self.result: InsertResult | None = None
        self.error: BaseException | None = None
        self.batch: list[_ThreadWaiter] | None = None  # set when this thread writes next

    def outcome(self) -> InsertResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class ThreadCoalescer:
    """:class:`Coalescer` for threads that block (``SyncQueue``): one write in flight at a time,
    and the threads that call meanwhile go together in the next one. No thread of its own:
    the next batch is written by the first thread in it, woken when the write before is done,
    so each thread writes at most one batch and a lone call is written by its own thread at
    once."""

    def __init__(
        self,
        insert_many: BlockingInsertMany,
        *,
        max_batch: int = MAX_BATCH,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._insert_many = insert_many
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self._reset()
        _THREAD_COALESCERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._waiting: collections.deque[_ThreadWaiter] = collections.deque()
        self._busy = False

    def insert(self, job: NewJob, now: float | None) -> InsertResult:
        with self._lock:
            lone = not self._busy
            self._busy = True
        if lone:  # nothing in flight: written at once, by this thread
            try:
                (result,) = self._insert_many([job], now)
            finally:
                self._hand_over()
            return result
        # Refused here, for this caller alone, before it can share a batch with others.
        check_now(now)
        check_new_jobs([job])
        me = _ThreadWaiter(job, now)
        with self._lock:
            if not self._busy:  # the write in flight ended meanwhile: this one leads
                self._busy = True
                me.batch = [me]
            elif len(self._waiting) < self.max_waiting:
                self._waiting.append(me)
            else:
                me.batch = []  # too many waiting: written alone, beside the batches
        if me.batch == []:
            (result,) = self._insert_many([job], now)
            return result
        if me.batch is None:
            self._wait(me)
        if me.batch is not None:
            try:
                self._write(me.batch)
            finally:
                self._hand_over()
        return me.outcome()

    def _hand_over(self) -> None:
        """Wake the first waiting thread to write the next batch, or mark nothing in flight."""
        with self._lock:
            batch: list[_ThreadWaiter] = []
            while self._waiting and len(batch) < self.max_batch:
                if batch and self._waiting[0].now != batch[0].now:
                    break
                batch.append(self._waiting.popleft())
            if not batch:
                self._busy = False
                return
            # Set under the lock: a waiter interrupted meanwhile (``_wait``) must see whether
            # it was handed a batch.
            batch[0].batch = batch
        batch[0].done.set()

    def _wait(self, me: _ThreadWaiter) -> None:
        """Wait to be settled or handed the next batch. Interrupted (``KeyboardInterrupt`` in
        the main thread), the caller leaves the waiting list; if it had just been handed the
        next batch, it writes the others' jobs first, so no thread is left waiting for a writer
        that is gone."""
        try:
            me.done.wait()
        except BaseException:
            with self._lock:
                if me in self._waiting:  # not in a batch yet: it simply leaves
                    self._waiting.remove(me)
                    raise
                handed = me.batch
            if handed is not None:
                others = [waiter for waiter in handed if waiter is not me]
                try:
                    if others:
                        self._write(others)
                finally:
                    self._hand_over()
            raise

    def _write(self, batch: list[_ThreadWaiter]) -> None:
        try:
            results = self._insert_many([w.job for w in batch], batch[0].now)
        except InvalidArgument as exc:
            if len(batch) == 1:
                _settle(batch[0], None, exc)
                return
            # Refused whole, so nothing of it was written: each job alone finds the one at fault.
            for waiter in batch:
                self._write([waiter])
            return
        except Exception as exc:
            for waiter in batch:
                _settle(waiter, None, exc)
            return
        except BaseException:
            # The writing thread was interrupted mid-write: the others were not, and learn that
            # their jobs may or may not have been written (as after a dropped connection).
            interrupted = BackendUnavailable(
                "the thread writing this enqueue's batch was interrupted before the write "
                "was confirmed: the job may or may not have been written"
            )
            for waiter in batch:
                _settle(waiter, None, interrupted)
            raise
        for waiter, result in zip(batch, results, strict=True):
            _settle(waiter, result, None)


# A forked child has only the thread that forked: a write another thread had in flight, and
# the threads waiting for it, are not in the child, so it starts with nothing in flight.
_THREAD_COALESCERS: weakref.WeakSet[ThreadCoalescer] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for coalescer in list(_THREAD_COALESCERS):
        coalescer._reset()  # pyright: ignore[reportPrivateUsage]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _settle(
    waiter: _ThreadWaiter, result: InsertResult | None, error: BaseException | None
) -> None:
    waiter.result, waiter.error = result, error
    waiter.done.set()
