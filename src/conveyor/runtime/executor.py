"""Run one attempt of one job and report what happened as an ``Outcome``.

Nothing here writes to the backend: the caller turns the outcome into a transition.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Callable
from typing import Any

from conveyor._context import JobContext
from conveyor._errors import PayloadValidationError, Permanent, Retry, Snooze, UnknownJob
from conveyor.core.outcome import (
    CancelRequested,
    Errored,
    Interrupted,
    Outcome,
    Snoozed,
    Succeeded,
    TimedOut,
)
from conveyor.core.serialization import decode_payload
from conveyor.drivers.records import JobRecord
from conveyor.runtime.registry import HandlerRegistry

MAX_ERROR_CHARS = 8000


class StopReason:
    """Why the runtime cancelled a running job; read by the job's own task after cancellation."""

    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"


def format_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip()
    head = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS // 2] + "\n...\n" + text[-MAX_ERROR_CHARS // 2 :]
    return f"{head}\n{text}"


async def execute(
    record: JobRecord,
    registry: HandlerRegistry,
    ctx: JobContext,
    stop_reason: Callable[[], str | None],
) -> Outcome:
    """Validate the payload, run the handler under its timeout, and classify the result."""
    registered = registry.get(record.name)
    if registered is None:
        return Errored(f"UnknownJob: {UnknownJob(record.name, registry.names())}", permanent=True)
    definition = registered.definition
    try:
        payload = decode_payload(record.name, definition.payload_type, record.payload)
    except PayloadValidationError as exc:
        return Errored(f"PayloadValidationError: {exc}", permanent=True)
    deadline = asyncio.timeout(definition.timeout)
    try:
        async with deadline:
            if registered.is_async:
                value = await registered.handler(payload, ctx)
            else:
                value = await run_in_daemon_thread(registered.handler, payload, ctx)
        result = definition.encode_result(value)
    except asyncio.CancelledError:
        ctx.cancelled.set()
        reason = stop_reason()
        if reason == StopReason.CANCELLED:
            return CancelRequested()
        if reason in (StopReason.SHUTDOWN, StopReason.LEASE_LOST):
            return Interrupted()
        raise
    except TimeoutError as exc:
        if not deadline.expired() or definition.timeout is None:
            return Errored(format_error(exc))  # the handler's own TimeoutError: an ordinary error
        ctx.cancelled.set()
        return TimedOut(definition.timeout)
    except Snooze as exc:
        return Snoozed(exc.delay)
    except Retry as exc:
        return Errored(f"Retry: {exc}", retry_delay=exc.delay)
    except Permanent as exc:
        return Errored(format_error(exc), permanent=True)
    except Exception as exc:
        permanent = isinstance(exc, definition.permanent)
        return Errored(format_error(exc), permanent=permanent)
    return Succeeded(result)


async def run_in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a sync handler on a daemon thread.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one stuck sync handler
    would hold a shut-down worker forever. A daemon thread is abandoned instead; the job it ran
    has already been handed back by then.
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

    threading.Thread(target=target, name="conveyor-sync-handler", daemon=True).start()
    return await future
