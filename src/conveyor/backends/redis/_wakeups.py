"""Waking idle workers: the wake-up lists they block on, and how long a wait may last.

Every script that makes a job runnable leaves one marker in its queue's wake list; an idle
worker blocks on that list (``BLPOP``) on a connection of its own. A wait is cut short when a
scheduled job falls due (learnt from the last fetch: the next fetch promotes it), and kept below
the reply timeout (a longer block would read as a dead connection).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from redis.asyncio.cluster import RedisCluster

from conveyor.backends.redis import _commands as commands
from conveyor.backends.redis import _coordination as coord
from conveyor.backends.redis import _resp
from conveyor.backends.redis import _stubs as stubs
from conveyor.backends.redis._connection import Client, socket_timeout
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._resp import BlockingConnection
from conveyor.core.cancellation import stop_if_cancelled

log = logging.getLogger("conveyor.redis")

MIN_BLOCK: Final = 0.005  # the shortest blocking wait sent (Redis rounds to ms; 0 is forever)


def longest_block(client: Client) -> float:
    """The longest blocking wait to send: below the reply timeout, which it would otherwise
    trip (the connection would be given up as dead)."""
    limit = socket_timeout(client)
    return max(limit - 1.0, limit / 2) if limit is not None else 60.0


class Wakeups:
    """The wake-up side of one driver: its blocking connection and what it knows of due jobs."""

    def __init__(self, client: Callable[[], Client], keys: Callable[[str], QueueKeys]) -> None:
        self._client = client
        self._keys = keys
        self._loop: asyncio.AbstractEventLoop | None = None
        self._blocking: BlockingConnection | None = None  # made on first use
        self._due: dict[str, float] = {}  # queue -> monotonic time its next scheduled job is due
        self._notifying: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        self._loop = None
        for task in list(self._notifying):
            task.cancel()
        if self._blocking is not None:
            self._blocking.close()
            self._blocking = None

    def blocking(self, client: _resp.Client) -> BlockingConnection:
        if self._blocking is None:
            self._blocking = client.blocking()
        return self._blocking

    def note_due(self, queue: str, fetched: stubs.Fetched) -> None:
        """Remember when ``queue``'s next scheduled job falls due, as a fetch reported it."""
        if fetched.next_due is not None and fetched.next_due > fetched.now:
            self._due[queue] = time.monotonic() + (fetched.next_due - fetched.now)
        else:
            self._due.pop(queue, None)

    def bounded(
        self, queues: Sequence[str], wait: float, *, due: bool = True, cap: bool = True
    ) -> float:
        """``wait``, cut short when a scheduled job of ``queues`` falls due (``due``) and kept
        below the reply timeout (``cap``)."""
        if due:
            now = time.monotonic()
            for queue in queues:
                if queue in self._due:
                    wait = min(wait, max(self._due[queue] - now, 0.0))
        if cap:
            wait = min(wait, longest_block(self._client()))
        return wait

    def notify(self, queue: str) -> None:
        """Wake an idle worker of ``queue`` (in any process): leaves the queue's wake marker.

        The write happens in the background on the driver's event loop; callable from any
        thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def start() -> None:
            if self._loop is None:  # closed meanwhile
                return
            task = loop.create_task(coord.notify(self._client(), self._keys(queue)))
            self._notifying.add(task)
            task.add_done_callback(self._notified)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            start()
        else:
            loop.call_soon_threadsafe(start)

    def _notified(self, task: asyncio.Task[None]) -> None:
        self._notifying.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("waking workers failed: %s", task.exception())

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        """Block on the queues' wake markers until one is taken or ``timeout`` passes (sooner
        when a scheduled job falls due: the worker's next fetch promotes it)."""
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + self.bounded(names, timeout, cap=False)
        longest = self.bounded(names, float("inf"), due=False)
        keys = [self._keys(q) for q in names]
        while (remaining := deadline - time.monotonic()) > 0.001:
            stop_if_cancelled()
            # Redis counts a block in whole milliseconds, and 0 means forever.
            wait = max(min(remaining, longest), MIN_BLOCK)
            client = self._client()
            if isinstance(client, RedisCluster):
                # One key too: awaited in a task of its own, so a cancel of this wait is never
                # swallowed by the cluster client (see _first_woken).
                woken = await _first_woken(client, keys, wait)
            else:
                woken = await commands.pop_wake(client, self.blocking(client), keys, wait)
            if woken:
                return


async def _first_woken(client: Client, keys: Sequence[QueueKeys], wait: float) -> bool:
    """On a cluster, each queue's marker lives on its own slot: wait on each, take the first."""
    pending = {asyncio.ensure_future(commands.pop_wake(client, None, [k], wait)) for k in keys}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.result() for task in done):
                return True
        return False
    finally:
        # Not awaited: redis-py's cluster client can swallow the cancellation of a blocked
        # command, which then runs out its own timeout; waiting for it would delay the wake-up.
        for task in pending:
            task.cancel()
            task.add_done_callback(_ignore_outcome)


def _ignore_outcome(task: asyncio.Task[bool]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as never retrieved
