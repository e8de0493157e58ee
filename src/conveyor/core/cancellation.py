"""Making sure a runtime loop stops when its task is cancelled.

A client library can swallow a cancellation that lands just as one of its calls completes (seen
with redis-py 8): the call returns normally, and a loop that only sleeps next would never stop,
hanging the worker's shutdown. The loops call :func:`stop_if_cancelled` after each call into a
backend, so a request to stop is honoured at the next step whatever the library did with it.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
