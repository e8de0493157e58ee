"""Daemon threads that report to the event loop: where sync handlers and sync hooks run."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any


def run_in_daemon_thread(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Start a sync handler on a daemon thread; the returned future resolves on the loop.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one stuck sync
    handler would hold a shut-down worker forever. The worker's concurrency bounds how many run.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, value)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop is closed: the worker has gone
            pass

    # The caller's context variables (a middleware's tracing span, a request id) go along.
    context = contextvars.copy_context()
    threading.Thread(
        target=context.run, args=(target,), name="conveyor-sync-handler", daemon=True
    ).start()
    return future
