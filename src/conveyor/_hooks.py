"""Hooks: callbacks a worker runs when an attempt fails, is retried, or a job dies.

``@worker.on_failed`` runs after every failed attempt (retried or not), ``@worker.on_retry``
after one that will be retried, ``@worker.on_dead`` when a job failed for good and went to the
dead-letter (failed) set: the place to page someone. Each hook gets a :class:`JobEvent`, after
the transition is written (so a hook never sees an outcome that did not happen). Passing a job
definition (``@worker.on_dead(send_email)``) limits a hook to that job, with its payload typed.

Hooks run as their own tasks, beside the jobs: a hook that raises is logged, one that hangs is
cut off after ``HOOK_TIMEOUT`` seconds, and neither ever changes a job's outcome or stops the
worker. At most ``MAX_PENDING_HOOKS`` run at once; events beyond that are dropped with a
warning rather than queued without bound.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel

from conveyor._definition import JobDef
from conveyor.core.headers import decode_headers
from conveyor.core.secrets import redact
from conveyor.core.versions import stored_version
from conveyor.drivers.records import JobRecord, TransitionKind
from conveyor.runtime.threads import run_in_daemon_thread

P = TypeVar("P", bound=BaseModel)

log = logging.getLogger("conveyor.worker")

HOOK_TIMEOUT: Final = 30.0
MAX_PENDING_HOOKS: Final = 100


class HookKind(enum.StrEnum):
    FAILED = "failed"  # an attempt failed (retried or not)
    RETRY = "retry"  # an attempt failed and the job will run again
    DEAD = "dead"  # the job failed for good: it is in the failed (dead-letter) set


@dataclass(frozen=True, slots=True)
class JobEvent(Generic[P]):
    """What a hook learns about the attempt that failed."""

    kind: HookKind
    job_id: str
    job_name: str
    queue: str
    attempt: int
    max_attempts: int
    error: str | None  # the error as stored: type, message and traceback
    duration: float  # seconds the handler ran
    retry_in: float | None  # for RETRY: seconds until the next attempt
    # The payload decoded with the job's definition (None if this worker does not know the
    # job's name or its stored payload no longer validates).
    payload: P | None
    payload_json: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict[str, str])

    @property
    def redacted_payload(self) -> Any:
        """The payload as JSON data with secret fields shown as ``**********`` (for logs and
        alerts: never send the raw payload of a job with secrets to a pager)."""
        return redact(json.loads(self.payload_json), self.headers)


Hook = Callable[[JobEvent[Any]], Awaitable[None] | None]
TypedHook = Callable[[JobEvent[P]], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _Registered:
    hook: Hook
    definition: JobDef[Any, Any] | None  # None: every job


class Hooks:
    """The hooks of one worker and the tasks running them."""

    def __init__(self) -> None:
        self._hooks: dict[HookKind, list[_Registered]] = {kind: [] for kind in HookKind}
        self._running: set[asyncio.Task[None]] = set()
        self._any = False  # asked once per finished job: kept rather than counted each time
        self.dropped = 0

    def add(self, kind: HookKind, hook: Hook, definition: JobDef[Any, Any] | None) -> None:
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {hook!r}")
        self._hooks[kind].append(_Registered(hook, definition))
        self._any = True

    def __bool__(self) -> bool:
        return self._any

    def finished(
        self,
        record: JobRecord,
        kind: TransitionKind,
        *,
        error: str | None,
        delay: float,
        duration: float,
        definitions: Mapping[str, JobDef[Any, Any]],
    ) -> None:
        """Start the hooks that the written transition ``kind`` of ``record`` calls for."""
        if kind is TransitionKind.RETRY:
            kinds = (HookKind.RETRY, HookKind.FAILED)
        elif kind is TransitionKind.FAIL:
            kinds = (HookKind.DEAD, HookKind.FAILED)
        else:
            return
        wanted = [
            (hook_kind, r)
            for hook_kind in kinds
            for r in self._hooks[hook_kind]
            if r.definition is None or r.definition.name == record.name
        ]
        if not wanted:
            return
        definition = definitions.get(record.name)
        headers = decode_headers(record.headers)
        stored = stored_version(headers)
        payload: BaseModel | None = None
        # A payload of a newer version than this worker's definition cannot be read here.
        if definition is not None and stored is not None and stored <= definition.version:
            try:
                payload = definition.decode_stored(record.payload, stored)
            except Exception:  # the hook still learns of the failure, without the payload
                payload = None
        for hook_kind, registered in wanted:
            event: JobEvent[Any] = JobEvent(
                kind=hook_kind,
                job_id=record.id,
                job_name=record.name,
                queue=record.queue,
                attempt=record.attempt,
                max_attempts=record.max_attempts,
                error=error,
                duration=duration,
                retry_in=delay if hook_kind is HookKind.RETRY else None,
                payload=payload,
                payload_json=record.payload,
                headers=headers,
            )
            self._start(registered.hook, event)

    def _start(self, hook: Hook, event: JobEvent[Any]) -> None:
        if len(self._running) >= MAX_PENDING_HOOKS:
            self.dropped += 1
            log.warning(
                "%d hooks are running already: %s hook %s for job %s dropped",
                len(self._running),
                event.kind.value,
                _name(hook),
                event.job_id,
                extra={"event": "hook_dropped", "job_id": event.job_id},
            )
            return
        task = asyncio.get_running_loop().create_task(_run(hook, event))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self, timeout: float) -> None:
        """Let running hooks finish for up to ``timeout`` seconds, then cancel the rest."""
        if not self._running:
            return
        _, stuck = await asyncio.wait(list(self._running), timeout=timeout)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck, timeout=1.0)


def _name(hook: Hook) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


async def _run(hook: Hook, event: JobEvent[Any]) -> None:
    try:
        async with asyncio.timeout(HOOK_TIMEOUT):
            if inspect.iscoroutinefunction(hook):
                await hook(event)
            else:
                # A daemon thread of its own, not the loop's executor: a sync hook that hangs
                # must not take a thread the worker needs (or keep the process from exiting).
                result = await asyncio.shield(run_in_daemon_thread(hook, event))
                if inspect.isawaitable(result):
                    await result
    except TimeoutError:
        log.error(
            "%s hook %s for job %s did not return within %gs; it was cut off",
            event.kind.value,
            _name(hook),
            event.job_id,
            HOOK_TIMEOUT,
            extra={"event": "hook_failed", "job_id": event.job_id},
        )
    except Exception:
        log.exception(
            "%s hook %s for job %s raised; the job's outcome stands",
            event.kind.value,
            _name(hook),
            event.job_id,
            extra={"event": "hook_failed", "job_id": event.job_id},
        )
