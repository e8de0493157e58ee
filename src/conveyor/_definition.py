"""Job definitions: a stable name bound to a payload model and a result type.

Definitions carry no handler, so an API process can import them without importing worker code.
The type parameters ``P`` (payload model) and ``R`` (result) flow to ``Queue.enqueue``,
``JobHandle.result`` and ``Worker.handles`` so a type checker rejects a mismatch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, TypeAdapter

from conveyor import _validation
from conveyor._dedup import DedupPolicy
from conveyor._errors import InvalidArgument, InvalidJobDefinition
from conveyor.core.backoff import DEFAULT_BACKOFF, Backoff
from conveyor.core.rate import Rate

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")

DEFAULT_QUEUE = "default"
DEFAULT_ATTEMPTS = 3

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}\Z")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}\Z")


def check_queue_name(queue: object, *, error: type[InvalidArgument] = InvalidArgument) -> str:
    if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
        raise error(f"invalid queue name {queue!r}: use 1-100 letters, digits, '_', '.', '-'")
    return queue


@dataclass(frozen=True, eq=False)
class JobDef(Generic[P, R]):
    """A typed job: build one with :func:`job`."""

    name: str
    payload_type: type[P]
    result_type: Any
    queue: str = DEFAULT_QUEUE
    attempts: int = DEFAULT_ATTEMPTS
    backoff: Backoff = DEFAULT_BACKOFF
    timeout: float | None = None
    priority: int = 0
    permanent: tuple[type[BaseException], ...] = ()
    keep_completed: float | None = None
    keep_failed: float | None = None
    rate_limit: Rate | None = None
    _result_adapter: TypeAdapter[Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_result_adapter", TypeAdapter(self.result_type))

    def encode_result(self, value: R) -> bytes:
        # By alias, as decode_result (and the payload encoding) reads it.
        return self._result_adapter.dump_json(value, by_alias=True)

    def decode_result(self, data: bytes) -> R:
        value: R = self._result_adapter.validate_json(data)
        return value

    def request(
        self,
        payload: P,
        *,
        job_id: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        attempts: int | None = None,
        dedup: DedupPolicy | None = None,
        keep_completed: float | timedelta | None = None,
        keep_failed: float | timedelta | None = None,
    ) -> JobRequest[P, R]:
        """A job ready to enqueue, for ``Queue.enqueue_many``."""
        return JobRequest(
            self,
            payload,
            job_id,
            delay,
            run_at,
            priority,
            queue,
            attempts,
            dedup,
            keep_completed,
            keep_failed,
        )

    def __repr__(self) -> str:
        return f"JobDef({self.name!r}, {self.payload_type.__name__}, queue={self.queue!r})"


@dataclass(frozen=True, slots=True)
class JobRequest(Generic[P, R]):
    definition: JobDef[P, R]
    payload: P
    job_id: str | None = None
    delay: float | timedelta | None = None
    run_at: datetime | None = None
    priority: int | None = None
    queue: str | None = None
    attempts: int | None = None
    dedup: DedupPolicy | None = None
    keep_completed: float | timedelta | None = None
    keep_failed: float | timedelta | None = None


@overload
def job(
    name: str,
    payload: type[P],
    *,
    result: None = None,
    queue: str = ...,
    attempts: int = ...,
    backoff: Backoff = ...,
    timeout: float | timedelta | None = ...,
    priority: int = ...,
    permanent: tuple[type[BaseException], ...] = ...,
    keep_completed: float | timedelta | None = ...,
    keep_failed: float | timedelta | None = ...,
    rate_limit: Rate | None = ...,
) -> JobDef[P, None]: ...


@overload
def job(
    name: str,
    payload: type[P],
    *,
    result: type[R],
    queue: str = ...,
    attempts: int = ...,
    backoff: Backoff = ...,
    timeout: float | timedelta | None = ...,
    priority: int = ...,
    permanent: tuple[type[BaseException], ...] = ...,
    keep_completed: float | timedelta | None = ...,
    keep_failed: float | timedelta | None = ...,
    rate_limit: Rate | None = ...,
) -> JobDef[P, R]: ...


@overload
def job(
    name: str,
    payload: type[P],
    *,
    result: object,
    queue: str = ...,
    attempts: int = ...,
    backoff: Backoff = ...,
    timeout: float | timedelta | None = ...,
    priority: int = ...,
    permanent: tuple[type[BaseException], ...] = ...,
    keep_completed: float | timedelta | None = ...,
    keep_failed: float | timedelta | None = ...,
    rate_limit: Rate | None = ...,
) -> JobDef[P, Any]:
    """A result type a checker cannot express as ``type[R]`` (``int | None``, ``Literal[...]``):
    annotate the variable to keep results typed, ``x: JobDef[M, int | None] = job(...)``."""
    ...


def job(
    name: str,
    payload: object,
    *,
    result: Any = None,
    queue: str = DEFAULT_QUEUE,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: Backoff = DEFAULT_BACKOFF,
    timeout: float | timedelta | None = None,
    priority: int = 0,
    permanent: tuple[type[BaseException], ...] = (),
    keep_completed: float | timedelta | None = None,
    keep_failed: float | timedelta | None = None,
    rate_limit: Rate | None = None,
) -> JobDef[Any, Any]:
    """Declare a job: ``send = job("email.send", SendEmail, result=str, attempts=5)``.

    ``name`` is what is stored with each job, so keep it stable across deploys. ``attempts``
    counts the first run. Exceptions listed in ``permanent`` fail the job without retrying.
    ``keep_completed`` / ``keep_failed`` (seconds or a timedelta) keep each job of this kind,
    result included, that long after it completed / failed, instead of the queue's retention
    (``keep_completed=0``: deleted by the next prune); an enqueue can override them.
    ``rate_limit`` caps how many of its jobs start in any window of time, across every worker
    (the definition then needs a queue of its own: see :class:`Rate`).
    """
    if not _NAME.match(name):
        raise InvalidJobDefinition(
            f"invalid job name {name!r}: use 1-200 letters, digits, '_', '.', ':', '-'"
        )
    if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise InvalidJobDefinition(
            f"job {name!r}: payload must be a pydantic BaseModel subclass, got {payload!r}"
        )
    error = InvalidJobDefinition
    _validation.attempts(attempts, f"job {name!r}: attempts", error=error)
    _validation.priority(priority, f"job {name!r}: priority", error=error)
    seconds = (
        None
        if timeout is None
        else _validation.seconds(timeout, f"job {name!r}: timeout", error=error, positive=True)
    )
    kept = [
        None if keep is None else _validation.seconds(keep, f"job {name!r}: {what}", error=error)
        for keep, what in ((keep_completed, "keep_completed"), (keep_failed, "keep_failed"))
    ]
    return JobDef(
        name=name,
        payload_type=payload,
        result_type=type(None) if result is None else result,
        queue=check_queue_name(queue, error=error),
        attempts=attempts,
        backoff=backoff,
        timeout=seconds,
        priority=priority,
        permanent=tuple(permanent),
        keep_completed=kept[0],
        keep_failed=kept[1],
        rate_limit=_rate_limit(rate_limit, name),
    )


def _rate_limit(value: object, name: str) -> Rate | None:
    if value is not None and not isinstance(value, Rate):
        raise InvalidJobDefinition(
            f"job {name!r}: rate_limit must be a conveyor.Rate, e.g. Rate(10, per=1), got {value!r}"
        )
    return value
