"""LISTEN/NOTIFY: how idle workers wake at once and running jobs learn they were cancelled.

Statements that make jobs runnable ``pg_notify`` the store's channel with ``q:<queue>``; a
cancel of a running job sends ``c:["<worker id>", "<job id>"]``. PostgreSQL delivers a
notification only when its transaction commits, so a job inserted in a caller's transaction
that rolls back never wakes anyone.

One :class:`Notifications` per driver holds its own connection (outside the pool: a listening
connection cannot go back to a pool), opened on the first ``listen`` or ``cancel_listen``, and
a task reading it. When that connection breaks, every waiter is woken (notifications may have
been missed meanwhile, so the caller looks for itself) and the task reconnects with a bounded
backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import psycopg
from psycopg import sql

from conveyor.drivers.wakeup import Listener, WakeupBoard

log = logging.getLogger("conveyor.postgres")

RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
# Cancels kept per worker until its cancel_listen collects them.
MAX_PENDING_CANCELS = 10_000


_BOARDS: dict[tuple[str, str], WakeupBoard] = {}
_BOARDS_LOCK = threading.Lock()


def board_for(conninfo: str, channel: str) -> WakeupBoard:
    """The wake-ups of one store in this process, shared by every driver connected to it, so a
    producer's notify reaches a worker's listen in the same process at once."""
    with _BOARDS_LOCK:
        return _BOARDS.setdefault((conninfo, channel), WakeupBoard())


class Notifications:
    def __init__(self, conninfo: str, channel: str, shown_url: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._shown = shown_url
        self.board = board_for(conninfo, channel)
        self.listener = Listener(self.board)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._cancels: dict[str, list[str]] = {}
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._closed = False
        self.epoch = 0  # how many times listening (re)started
        self._epoch_seen: dict[str, int] = {}  # by worker id, for cancel_listen
        self._queues_epoch: dict[tuple[str, ...], int] = {}  # by queues listened to, for listen

    async def start(self) -> None:
        """Make sure the listening connection runs (from the first wait on: a producer that
        never waits holds no second connection), and wait until it listens."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="conveyor-listen")
        # Bounded: when the server is down, listen() still returns after its timeout and the
        # caller's next operation reports the outage.
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._ready.wait()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except (psycopg.Error, OSError) as exc:
                log.warning("listening on %s failed: %s; retrying", self._shown, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            try:
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.epoch += 1
                    if self._ready.is_set():
                        self._wake_everyone()  # whatever happened while not listening
                    self._ready.set()
                    delay = RECONNECT_MIN_SECONDS
                    async for notice in conn.notifies():
                        self._dispatch(notice.payload)
            except Exception as exc:  # whatever broke it, listening must go on: start afresh
                if self._closed:
                    return
                log.warning(
                    "the listening connection to %s broke: %s; reconnecting", self._shown, exc
                )
                self._wake_everyone()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "q":
            self.board.notify(rest)
        elif kind == "c":
            with contextlib.suppress(ValueError, TypeError):
                worker_id, job_id = cast("tuple[str, str]", tuple(json.loads(rest)))
                event = self._cancel_events.get(worker_id)
                if event is None:
                    return  # another process's worker: every listener hears every cancel
                pending = self._cancels.setdefault(worker_id, [])
                if len(pending) < MAX_PENDING_CANCELS:
                    pending.append(job_id)
                event.set()

    def _wake_everyone(self) -> None:
        self.board.notify_all()
        for event in self._cancel_events.values():
            event.set()

    async def listen(
        self,
        queues: Sequence[str],
        timeout: float,
        runnable: Callable[[Sequence[str]], Awaitable[bool]],
    ) -> None:
        """Wait for a notification of ``queues``. What committed before listening began was
        never heard: the first wait of ``queues`` since then (whichever call, this one or a
        cancel listener's, started listening) returns at once if ``runnable`` finds work."""
        await self.start()
        key, epoch = tuple(queues), self.epoch
        if self._ready.is_set() and self._queues_epoch.get(key) != epoch:
            found = await runnable(queues)
            # Only once answered: a check that failed (the connection dropped) is made again.
            self._queues_epoch[key] = epoch
            if found:
                self.listener.catch_up(queues)
                return
        await self.listener.listen(queues, timeout)

    async def cancel_listen(
        self,
        worker_id: str,
        timeout: float,
        requested: Callable[[str], Awaitable[list[str]]],
    ) -> list[str]:
        """The ids of ``worker_id``'s jobs cancelled since the last call. Cancels sent while
        nothing listened (before the first call, or while the connection was down) were not
        heard: each time listening (re)starts, ``requested`` reads them from the jobs."""
        self._cancel_events.setdefault(worker_id, asyncio.Event())
        await self.start()
        if self._ready.is_set() and self._epoch_seen.get(worker_id) != self.epoch:
            self._epoch_seen[worker_id] = self.epoch
            missed = await requested(worker_id)
            if missed:
                return list(dict.fromkeys(self._cancels.pop(worker_id, []) + missed))
        pending = self._cancels.pop(worker_id, [])
        if pending:
            return pending
        event = self._cancel_events.setdefault(worker_id, asyncio.Event())
        event.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        return self._cancels.pop(worker_id, [])
