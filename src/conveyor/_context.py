"""What a handler knows about the job it runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from conveyor._errors import InvalidArgument
from conveyor.core.serialization import writable_text
from conveyor.drivers.common import PROGRESS_MESSAGE_CHARS

ProgressSink = Callable[[float, str | None], None]


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the job's fields to every record, keeping any ``extra`` the caller passes too
    (the stdlib adapter would replace it)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


_MAKING_CONDITION = threading.Lock()


class CancelFlag(threading.Event):
    """A ``threading.Event`` whose lock and condition are made on the first ``set``, ``clear``
    or ``wait``, not when the job starts: most jobs end without anyone touching their flag, and
    making them cost as much as the rest of a job's context. Behaves as the stdlib's event."""

    def __init__(self) -> None:  # not super().__init__(): it would make the condition now
        self._flag = False
        self._condition: threading.Condition | None = None

    def _made(self) -> threading.Condition:
        condition = self._condition
        if condition is None:
            with _MAKING_CONDITION:  # two threads must never make one each
                condition = self._condition
                if condition is None:
                    condition = self._condition = threading.Condition(threading.Lock())
        return condition

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        condition = self._made()
        with condition:
            self._flag = True
            condition.notify_all()

    def clear(self) -> None:
        with self._made():
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        condition = self._made()
        with condition:
            signaled = self._flag
            if not signaled:
                signaled = condition.wait(timeout)
            return signaled

    def _at_fork_reinit(self) -> None:  # what threading calls on its events in a forked child
        if self._condition is not None:
            self._condition._at_fork_reinit()  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=False)
class JobContext:
    """Passed to every handler next to its payload.

    ``cancelled`` is set when the job is cancelled, times out, loses its lease, or the worker's
    shutdown grace runs out. An async handler is also cancelled at that point. A sync handler
    cannot be interrupted, so it should check ``cancelled`` between steps: after a timeout or a
    cancel the worker keeps the job leased until the handler's thread returns, so the job never
    runs twice at once on its account.
    """

    job_id: str
    job_name: str
    queue: str
    attempt: int
    max_attempts: int
    enqueued_at: datetime
    worker_id: str
    logger: logging.LoggerAdapter[logging.Logger]
    cancelled: threading.Event = field(default_factory=CancelFlag)
    _progress: list[tuple[float, str | None]] = field(
        default_factory=list[tuple[float, str | None]], repr=False
    )
    _sink: ProgressSink | None = field(default=None, repr=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the job got: ``fraction`` from 0 to 1, and an optional message (cut to
        500 characters). Returns at once, from async and sync handlers alike: the worker writes
        the latest value of each job every half second or so, and before the job's outcome, so
        ``Queue.get``, the job handle and ``conveyor jobs show`` see it. A write that fails is
        logged, never the job's failure. A fraction outside 0..1 raises ``InvalidArgument``."""
        given = cast(object, fraction)  # a caller outside the checker's view may pass anything
        if not isinstance(given, int | float) or isinstance(given, bool) or not 0 <= given <= 1:
            raise InvalidArgument(f"progress must be a number from 0 to 1, got {fraction!r}")
        if message is not None:
            if not isinstance(cast(object, message), str):
                raise InvalidArgument(f"a progress message must be a str, got {message!r}")
            message = writable_text(message[:PROGRESS_MESSAGE_CHARS])[:PROGRESS_MESSAGE_CHARS]
        value = float(fraction)
        self._progress[:] = [(value, message)]
        self.logger.debug("job progress", extra={"progress": value})
        if self._sink is not None:
            self._sink(value, message)

    @property
    def last_progress(self) -> float | None:
        """The fraction this attempt reported last (None before the first report)."""
        return self._progress[0][0] if self._progress else None


def new_context(
    job_id: str,
    job_name: str,
    queue: str,
    attempt: int,
    max_attempts: int,
    enqueued_at: datetime,
    worker_id: str,
    logger: logging.LoggerAdapter[logging.Logger],
    sink: ProgressSink | None,
) -> JobContext:
    """``JobContext(...)`` for the worker, one per job: the frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``, twice the cost of filling ``__dict__``.
    The same object either way (no ``__post_init__``; a test compares the two)."""
    ctx = object.__new__(JobContext)
    ctx.__dict__.update(
        job_id=job_id,
        job_name=job_name,
        queue=queue,
        attempt=attempt,
        max_attempts=max_attempts,
        enqueued_at=enqueued_at,
        worker_id=worker_id,
        logger=logger,
        cancelled=CancelFlag(),
        _progress=[],
        _sink=sink,
    )
    return ctx


def epoch_to_datetime(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)
