"""Keeps the worker's background loops running, or stops the worker when one cannot be kept.

A worker without its completer, maintenance or heartbeat would run on while something vital is
missing: outcomes never written, leases never rescued, the worker invisible. Each loop runs
under a :class:`Supervisor`: a loop that fails is logged with its traceback and restarted after
a short, growing pause; one that fails :data:`MAX_FAILURES` times within :data:`WINDOW` seconds
is given up, and the supervisor's ``on_give_up`` stops the worker, which then exits with an
error instead of running on without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

log = logging.getLogger("conveyor.worker")

MAX_FAILURES: Final = 5
WINDOW: Final = 60.0


class Supervisor:
    def __init__(
        self,
        on_give_up: Callable[[str, BaseException], None],
        *,
        max_failures: int | None = None,
        window: float = WINDOW,
        first_pause: float = 0.1,
    ) -> None:
        self._on_give_up = on_give_up
        self._max_failures = MAX_FAILURES if max_failures is None else max_failures
        self._window = window
        self._first_pause = first_pause
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop()`` until it returns, restarting it when it raises."""
        self._tasks[name] = asyncio.create_task(self._keep(name, loop), name=f"conveyor-{name}")

    def task(self, name: str) -> asyncio.Task[None]:
        return self._tasks[name]

    async def _keep(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        failures: list[float] = []
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                failures = [at for at in failures if now - at < self._window] + [now]
                if len(failures) >= self._max_failures:
                    log.critical(
                        "the worker's %s loop failed %d times in %gs; stopping the worker",
                        name,
                        len(failures),
                        self._window,
                        exc_info=exc,
                        extra={"event": "crashed"},
                    )
                    self._on_give_up(name, exc)
                    return
                pause = self._first_pause * 2 ** (len(failures) - 1)
                log.error(
                    "the worker's %s loop failed; restarting it in %.1fs",
                    name,
                    pause,
                    exc_info=exc,
                    extra={"event": "restarted"},
                )
                await asyncio.sleep(pause)

    async def stop(self, *names: str) -> None:
        """Cancel the named loops (all when none are named) and wait for them to end."""
        chosen = [self._tasks.pop(n) for n in (names or list(self._tasks)) if n in self._tasks]
        for task in chosen:
            task.cancel()
        await asyncio.gather(*chosen, return_exceptions=True)
