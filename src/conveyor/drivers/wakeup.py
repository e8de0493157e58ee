"""In-process wake-ups shared by the embedded backends.

A producer and a worker in the same process should not wait for a poll interval. Listeners
register an ``asyncio.Event`` together with its loop; ``notify`` sets it thread-safely, so a
producer on another thread or loop (the sync portal) still wakes the worker at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence


class WakeupBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, queue: str) -> None:
        with self._lock:
            waiters = self._waiters.pop(queue, [])
        for loop, event in waiters:
            if loop.is_closed():
                continue
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
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
