"""In-process wake-ups shared by the embedded backends.

A producer and a worker in the same process should not wait for a poll interval. Listeners
register an ``asyncio.Event`` together with its loop; ``notify`` sets it thread-safely, so a
producer on another thread or loop (the sync portal) still wakes the worker at once.

Every notification also stamps its queue with the board's next clock value. A :class:`Listener`
(one per driver) remembers the stamps it has seen, so a notification that lands while nobody is
registered (after a worker's fetch found nothing, before it starts to listen) is not lost: the
next ``listen`` returns at once. Notifications before ``listen`` returns are covered by the
caller's next fetch, since a notify always follows the commit that made the work runnable.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence


class WakeupBoard:
    """The wake-ups of one store, shared by every driver connected to it in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._clock = 0
        self._stamps: dict[str, int] = {}  # queue -> clock value of its latest notification
        self._all = 0  # clock value of the latest notification of every queue at once

    def notify(self, queue: str) -> None:
        with self._lock:
            self._clock += 1
            self._stamps[queue] = self._clock
            waiters = self._waiters.pop(queue, [])
        for loop, event in waiters:
            if loop.is_closed():
                continue
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def notify_all(self) -> None:
        """Wake every listener of every queue (what was notified is no longer known)."""
        with self._lock:
            self._clock += 1
            self._all = self._clock
            waiters = [w for queue_waiters in self._waiters.values() for w in queue_waiters]
            self._waiters.clear()
        for loop, event in waiters:
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)

    def clock(self) -> int:
        """The stamp of the latest notification of any queue (0 before the first)."""
        with self._lock:
            return self._clock

    def stamps(self, queues: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {queue: max(self._stamps.get(queue, 0), self._all) for queue in queues}

    async def wait(
        self, queues: Sequence[str], timeout: float, *, seen: Mapping[str, int] | None = None
    ) -> None:
        """Return on a notification for ``queues`` or after ``timeout`` seconds; at once when
        one of them was notified after the stamp ``seen`` holds for it."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            # Checked under the lock that registers the waiter: no notification falls between.
            if seen is not None and any(
                max(self._stamps.get(queue, 0), self._all) > seen.get(queue, 0) for queue in queues
            ):
                return
            for queue in queues:
                self._waiters.setdefault(queue, []).append(entry)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            with self._lock:
                for queue in queues:
                    waiters = self._waiters.get(queue)
                    if waiters and entry in waiters:
                        waiters.remove(entry)


class Listener:
    """One driver's view of a board: the notifications it has already answered.

    Not thread-safe, like the driver that owns it; the board it reads is.
    """

    def __init__(self, board: WakeupBoard) -> None:
        self.board = board
        self._baseline = board.clock()  # notifications before this listener existed are old
        self._seen: dict[str, int] = {}

    def _seen_for(self, queues: Sequence[str]) -> dict[str, int]:
        return {queue: self._seen.get(queue, self._baseline) for queue in queues}

    def pending(self, queues: Sequence[str]) -> bool:
        """Whether one of ``queues`` was notified since this listener last caught up on it."""
        seen = self._seen_for(queues)
        return any(stamp > seen[queue] for queue, stamp in self.board.stamps(queues).items())

    def catch_up(self, queues: Sequence[str]) -> None:
        """Mark every notification of ``queues`` so far as answered (call when ``listen``
        returns: the caller's next fetch sees whatever they announced)."""
        self._seen.update(self.board.stamps(queues))

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Wait for a notification not yet answered, at most ``timeout`` seconds; does not
        catch up."""
        await self.board.wait(queues, timeout, seen=self._seen_for(queues))

    async def listen(self, queues: Sequence[str], timeout: float) -> None:
        """``wait``, then catch up: the whole ``listen`` of a backend with no other signal."""
        await self.wait(queues, timeout)
        self.catch_up(queues)
