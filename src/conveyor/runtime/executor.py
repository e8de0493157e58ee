"""Run one attempt of one job and report what happened as an ``Outcome``.

Nothing here writes to the backend: the caller turns the outcome into a transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from conveyor._context import JobContext
from conveyor._errors import PayloadValidationError, Permanent, RateLimited, Retry, Snooze
from conveyor._middleware import JobCall, Middleware, chain
from conveyor.core.headers import decode_headers
from conveyor.core.outcome import (
    CancelRequested,
    Errored,
    Interrupted,
    NewerVersion,
    Outcome,
    Snoozed,
    Succeeded,
    Throttled,
    TimedOut,
    Unhandled,
)
from conveyor.core.versions import VERSION_HEADER, stored_version
from conveyor.drivers.records import JobRecord
from conveyor.runtime.registry import HandlerRegistry
from conveyor.runtime.threads import run_in_daemon_thread

log = logging.getLogger("conveyor.worker")

MAX_ERROR_CHARS = 8000
# Entered instead of a Timeout by jobs without one; stateless, so one serves every job.
_NO_DEADLINE = contextlib.nullcontext()


class StopReason(enum.StrEnum):
    """Why the runtime cancelled a running job; read by the job's own task after cancellation."""

    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"


def format_error(exc: BaseException) -> str:
    """``Type: message`` then the traceback, cut in the middle to :data:`MAX_ERROR_CHARS`; never
    raises, whatever the exception's ``__str__`` does."""
    try:
        text = "".join(traceback.format_exception(exc)).rstrip()
        head = f"{type(exc).__name__}: {exc}"
    except Exception as broken:
        text = ""
        head = f"{type(exc).__name__}: <the exception cannot be shown: {broken!r}>"
    if len(head) > MAX_ERROR_CHARS:
        head = head[: MAX_ERROR_CHARS // 2] + " ..."
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS // 2] + "\n...\n" + text[-MAX_ERROR_CHARS // 2 :]
    return f"{head}\n{text}"


async def execute(
    record: JobRecord,
    registry: HandlerRegistry,
    ctx: JobContext,
    stop_reason: Callable[[], StopReason | None],
    *,
    max_result_bytes: int,
    middleware: Sequence[Middleware] = (),
) -> Outcome:
    """Validate the payload, run the handler under its timeout, and classify the result.

    Whatever the handler or its values do, this returns an outcome (or re-raises the worker's
    own cancellation): a payload, result or exception that cannot be read fails only its job."""
    registered = registry.get(record.name)
    if registered is None:
        return Unhandled(tuple(registry.names()))
    definition = registered.definition
    headers = decode_headers(record.headers)
    stored = stored_version(headers)
    if stored is None:
        return Errored(
            f"PayloadValidationError: job {record.name!r} has an unreadable version header "
            f"{headers.get(VERSION_HEADER)!r}",
            permanent=True,
        )
    if stored > definition.version:  # enqueued by newer code than this worker runs
        return NewerVersion(stored, definition.version)
    try:
        payload = definition.decode_stored(record.payload, stored)
    except PayloadValidationError as exc:
        return Errored(f"PayloadValidationError: {exc}", permanent=True)
    except Exception as exc:  # e.g. a stored payload nested deeper than the parser allows
        return Errored(
            f"PayloadValidationError: the stored payload of job {record.name!r} cannot be read: "
            f"{type(exc).__name__}: {exc}",
            permanent=True,
        )
    thread: asyncio.Future[Any] | None = None

    async def handler() -> object:
        nonlocal thread
        if registered.is_async:
            return await registered.handler(payload, ctx)
        thread = run_in_daemon_thread(registered.handler, payload, ctx)
        # Shielded: cancelling the wait must not forget the thread, which runs on.
        value = await asyncio.shield(thread)
        if inspect.isawaitable(value):
            _discard(value)
            raise _AwaitableFromSync(record.name)
        return value

    # A job without a timeout enters no Timeout (an object and a loop timer per job otherwise).
    deadline = None if definition.timeout is None else asyncio.timeout(definition.timeout)
    try:
        async with deadline or _NO_DEADLINE:
            if middleware:
                call = JobCall(ctx, payload, definition, headers)
                value = await chain(middleware, call, handler)()
            elif registered.is_async:  # the common case, without the closure's extra frame
                value = await registered.handler(payload, ctx)
            else:
                value = await handler()
    except _AwaitableFromSync as exc:
        return Errored(str(exc), permanent=True)
    except asyncio.CancelledError:
        ctx.cancelled.set()
        reason = stop_reason()
        if reason is None:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker itself is being cancelled from outside
            # The handler raised CancelledError on its own (e.g. a cancelled child task).
            return Errored("CancelledError: the handler was cancelled from within")
        if reason == StopReason.CANCELLED:
            if await _outlive(thread, record, "cancelled"):
                return CancelRequested()
            return Interrupted()
        return Interrupted()  # shutdown hands the job back; a lost lease writes nothing
    except TimeoutError as exc:
        if deadline is None or definition.timeout is None or not deadline.expired():
            return Errored(format_error(exc))  # the handler's own TimeoutError: an ordinary error
        ctx.cancelled.set()
        if not await _outlive(thread, record, "timed out"):
            return Interrupted()
        return TimedOut(definition.timeout)
    except Snooze as exc:
        return Snoozed(exc.delay)
    except RateLimited as exc:
        return Throttled(exc.retry_after, _shown(exc))
    except Retry as exc:
        return Errored(f"Retry: {_shown(exc)}", retry_delay=exc.delay)
    except Permanent as exc:
        return Errored(format_error(exc), permanent=True)
    except Exception as exc:
        permanent = isinstance(exc, definition.permanent)
        return Errored(format_error(exc), permanent=permanent)
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        # Raised by the handler itself (``sys.exit()`` in library code, a stray
        # ``KeyboardInterrupt``): it must end its own job, not the worker and every job in it.
        return Errored(
            f"{format_error(exc)}\n(raised by the handler of job {record.name!r}; "
            "the worker does not exit for it)",
            permanent=True,
        )
    try:
        result = definition.encode_result(value)
    except Exception as exc:  # the handler's work is done: running it again would not help
        return Errored(
            f"ResultError: the result of job {record.name!r} cannot be stored as "
            f"{definition.result_type!r}: {type(exc).__name__}: {exc}",
            permanent=True,
        )
    if len(result) > max_result_bytes:
        return Errored(
            f"ResultTooLarge: the result of job {record.name!r} is {len(result)} bytes, over the "
            f"limit of {max_result_bytes} bytes; store it elsewhere and return a reference",
            permanent=True,
        )
    return Succeeded(result)


class _AwaitableFromSync(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"TypeError: the handler of job {name!r} is a plain function that returned an "
            "awaitable; declare it `async def` so the worker awaits it"
        )


def _shown(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as broken:
        return f"<the exception cannot be shown: {broken!r}>"


def _discard(awaitable: object) -> None:
    """Close a coroutine nobody will await, so Python does not warn about it later."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


async def _outlive(thread: asyncio.Future[Any] | None, record: JobRecord, why: str) -> bool:
    """Wait for a sync handler's thread to return before the job may run again.

    Returns false if the wait itself was cut short (the worker is shutting down; the job is
    then handed back while the thread still runs, and the process exit ends the thread).
    """
    if thread is None or thread.done():
        return True
    log.warning(
        "sync handler of job %s %s but is still running; the job stays leased until it returns "
        "(check ctx.cancelled in long sync handlers)",
        record.id,
        why,
        extra={"job_id": record.id, "job_name": record.name, "event": "waiting"},
    )
    try:
        await asyncio.shield(thread)
    except asyncio.CancelledError:
        return False
    except BaseException:
        pass  # the handler's own error no longer matters: the outcome is already decided
    return True
