"""Extends every held lease in one call per tick, from a dedicated thread.

The thread has its own event loop and its own connection, so a blocked event loop or a
pure-Python, GIL-heavy handler delays renewal by at most a GIL switch interval rather than
starving it. What it learns (leases lost, cancellations requested) is handed to the worker's
loop. A handler stuck in one C call that never releases the GIL does starve a thread, which is
why workers on a shared store renew from a process of their own instead
(:mod:`conveyor.runtime.renewer`); this keeper serves the in-process store and fake clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from conveyor.core.clock import Clock
from conveyor.drivers.protocol import Driver
from conveyor.drivers.records import ExtendResult, Lease

log = logging.getLogger("conveyor.worker")

OnExtended = Callable[[ExtendResult, Mapping[str, str]], None]
"""Called on the worker's loop with the result and the tokens that were sent, by job id."""

OnRenewal = Callable[[bool, int], None]
"""Called on the worker's loop after each renewal of held leases: whether the call reached the
backend, and how many leases it carried (for metrics and health checks)."""


class Keeper(Protocol):
    """What the worker needs of whatever renews its leases."""

    def hold(self, job_id: str, token: str, queue: str | None = None) -> None: ...

    def release(self, job_id: str, token: str | None = None) -> None: ...

    def batch(self) -> AbstractContextManager[None]:
        """Holds made inside the block may be told to the renewer together, at its end (the
        jobs of one fetch start in one go)."""
        ...

    async def start(self) -> None: ...

    def stop(self) -> None:
        """Blocking: call it through ``asyncio.to_thread``."""
        ...


class LeaseKeeper:
    def __init__(
        self,
        driver: Driver,
        *,
        lease_seconds: float,
        interval: float,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_extended: OnExtended,
        on_renewal: OnRenewal | None = None,
    ) -> None:
        self._driver = driver
        self._lease_seconds = lease_seconds
        self._interval = interval
        # After a failed renewal, try again well before the lease can lapse.
        self._retry_interval = max(min(interval / 4, 1.0), 0.01)
        self._clock = clock
        self._loop = loop
        self._on_extended = on_extended
        self._on_renewal = on_renewal
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: str, token: str, queue: str | None = None) -> None:
        with self._lock:
            self._leases[job_id] = Lease(job_id, token, queue)

    def release(self, job_id: str, token: str | None = None) -> None:
        """Stop renewing ``job_id`` (only if still held with ``token``, when one is given: a
        newer attempt of the same job may hold it now)."""
        with self._lock:
            held = self._leases.get(job_id)
            if held is not None and (token is None or held.token == token):
                del self._leases[job_id]

    def batch(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # a hold costs nothing to tell here

    async def start(self) -> None:
        self._thread = threading.Thread(
            target=self._main, name="conveyor-lease-keeper", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Blocking: call it from a thread other than the worker's loop (``asyncio.to_thread``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self._interval, 1.0) + 5.0)

    def _main(self) -> None:
        asyncio.run(self._tick_forever())

    async def _tick_forever(self) -> None:
        opened = False
        wait = 0.0
        try:
            while not self._stop.wait(wait):
                started = time.monotonic()
                if not opened:
                    opened = await self._open()
                    ok = opened
                else:
                    ok = await self.tick()
                # A fixed schedule: a slow call does not push the next renewal later.
                period = self._interval if ok else self._retry_interval
                wait = max(period - (time.monotonic() - started), 0.0)
        finally:
            if opened:
                await self._driver.close()

    async def _open(self) -> bool:
        try:
            await self._driver.open()
        except Exception as exc:
            log.error("lease keeper cannot connect, retrying: %s", exc)
            return False
        return True

    async def tick(self) -> bool:
        """Renew every held lease once; false if the backend could not be reached."""
        with self._lock:
            leases = list(self._leases.values())
        if not leases:
            return True
        try:
            result = await self._driver.job_extend_leases(
                leases, self._lease_seconds, now=self._clock.now()
            )
        except Exception as exc:  # retried soon; a lease outlives several failed renewals
            log.warning("extending %d lease(s) failed: %s", len(leases), exc)
            self._tell_renewal(False, len(leases))
            return False
        if result.lost or result.cancel_requested:
            sent = {lease.job_id: lease.token for lease in leases}
            try:
                self._loop.call_soon_threadsafe(self._on_extended, result, sent)
            except RuntimeError:  # the worker's loop has closed
                pass
        self._tell_renewal(True, len(leases))
        return True

    def _tell_renewal(self, ok: bool, count: int) -> None:
        if self._on_renewal is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._on_renewal, ok, count)
        except RuntimeError:  # the worker's loop has closed
            pass
