"""Job definitions: a stable name bound to a payload model and a result type.

Definitions carry no handler, so an API process can import them without importing worker code.
The type parameters ``P`` (payload model) and ``R`` (result) flow to ``Queue.enqueue``,
``JobHandle.result`` and ``Worker.handles`` so a type checker rejects a mismatch.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar, cast, overload

from pydantic import BaseModel, TypeAdapter

from conveyor import _validation
from conveyor._dedup import DedupPolicy
from conveyor._errors import InvalidArgument, InvalidJobDefinition
from conveyor._slots import fast_constructor
from conveyor.core.backoff import DEFAULT_BACKOFF, Backoff
from conveyor.core.rate import Rate
from conveyor.core.secrets import secrets_header
from conveyor.core.versions import Upgrade, check_version, decode_versioned, version_header
from conveyor.drivers.groups import MAX_GROUP_CONCURRENCY, MAX_GROUP_RATE_COUNT
from conveyor.drivers.records import JobGroup

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")

DEFAULT_QUEUE = "default"
DEFAULT_ATTEMPTS = 3

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}\Z")
# The longest key a definition's ``group_key`` may return (the stored key adds the job's name).
GROUP_KEY_TEXT: Final = 256
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
    # Groups (per-key concurrency, per-key rate, fair serving): see ``job``.
    group_key: Callable[[P], str] | None = None
    group_concurrency: int | None = None
    group_rate: Rate | None = None
    # Payload evolution: see ``job`` and :mod:`conveyor.core.versions`.
    version: int = 1
    upgrade: Upgrade | None = None
    _result_adapter: TypeAdapter[Any] = field(init=False, repr=False)
    _headers: Mapping[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_result_adapter", TypeAdapter(self.result_type))
        headers = {**secrets_header(self.payload_type), **version_header(self.version)}
        object.__setattr__(self, "_headers", MappingProxyType(headers))

    @property
    def headers(self) -> Mapping[str, str]:
        """Conveyor's own headers for each job of this definition: where its payload holds
        secrets, and the version that enqueued it (see :mod:`conveyor.core.versions`)."""
        return self._headers

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
        request: JobRequest[P, R] = _new_request(
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
        return request

    def decode_stored(self, data: bytes, stored_version: int) -> P:
        """A stored payload that version ``stored_version`` of this definition enqueued, as
        this version's model: upgraded first when it is older (never call it with a newer
        one). Raises ``PayloadValidationError`` (``PayloadUpgradeError`` when the upgrade
        fails)."""
        return decode_versioned(
            self.name,
            self.payload_type,
            data,
            stored=stored_version,
            current=self.version,
            upgrade=self.upgrade,
        )

    def group_of(self, payload: P) -> JobGroup | None:
        """The group a job with ``payload`` joins: its key is the job's name and what
        ``group_key`` returns, so definitions never share a group by accident. A key function
        that fails or returns something else than text fails only this enqueue."""
        if self.group_key is None:
            return None
        try:
            key = cast(object, self.group_key(payload))
        except Exception as exc:
            raise InvalidArgument(
                f"job {self.name!r}: its group_key function raised {exc!r}"
            ) from exc
        if not isinstance(key, str) or not 1 <= len(key) <= GROUP_KEY_TEXT or "\x00" in key:
            raise InvalidArgument(
                f"job {self.name!r}: group_key must return text of 1 to {GROUP_KEY_TEXT} "
                f"characters without NUL, got {key!r}"
            )
        rate = self.group_rate
        return JobGroup(
            f"{self.name}:{key}",
            concurrency=self.group_concurrency or 0,
            rate_count=0 if rate is None else rate.count,
            rate_per=0.0 if rate is None else rate.per,
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


# JobRequest(...) at a third of the cost: one per job of an enqueue_many (see conveyor._slots).
_new_request: Final[Callable[..., JobRequest[Any, Any]]] = fast_constructor(JobRequest)


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
    group_key: Callable[[P], str] | None = ...,
    group_concurrency: int | None = ...,
    group_rate: Rate | None = ...,
    version: int = ...,
    upgrade: Upgrade | None = ...,
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
    group_key: Callable[[P], str] | None = ...,
    group_concurrency: int | None = ...,
    group_rate: Rate | None = ...,
    version: int = ...,
    upgrade: Upgrade | None = ...,
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
    group_key: Callable[[P], str] | None = ...,
    group_concurrency: int | None = ...,
    group_rate: Rate | None = ...,
    version: int = ...,
    upgrade: Upgrade | None = ...,
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
    group_key: Callable[[Any], str] | None = None,
    group_concurrency: int | None = None,
    group_rate: Rate | None = None,
    version: int = 1,
    upgrade: Upgrade | None = None,
) -> JobDef[Any, Any]:
    """Declare a job: ``send = job("email.send", SendEmail, result=str, attempts=5)``.

    ``name`` is what is stored with each job, so keep it stable across deploys. ``attempts``
    counts the first run. Exceptions listed in ``permanent`` fail the job without retrying.
    ``keep_completed`` / ``keep_failed`` (seconds or a timedelta) keep each job of this kind,
    result included, that long after it completed / failed, instead of the queue's retention
    (``keep_completed=0``: deleted by the next prune); an enqueue can override them.
    ``rate_limit`` caps how many of its jobs start in any window of time, across every worker
    (the definition then needs a queue of its own: see :class:`Rate`).

    ``group_key`` puts each job in a group by its payload (``lambda p: p.account_id``): the
    groups of a queue are served round-robin, so a key with 100,000 waiting jobs cannot starve
    a key with one. ``group_concurrency`` runs at most that many jobs of one key at once (1:
    one at a time per key) and ``group_rate`` caps each key's starts, across every worker.

    ``version`` (default 1) is recorded with each job enqueued; raise it when the payload changes
    shape in a way the model cannot read by itself, and give ``upgrade(from_version, data)``,
    which returns the JSON object ``data`` enqueued by an older version in the current shape (a
    plain function, called by the worker before validation: reshape data, do no I/O). A worker
    with an older version hands a newer job back for a worker that has the newer one.
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
    _check_group(group_key, group_concurrency, group_rate, name)
    _check_version(version, upgrade, name)
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
        rate_limit=_rate_limit(rate_limit, name, "rate_limit"),
        group_key=group_key,
        group_concurrency=group_concurrency,
        group_rate=_group_rate(group_rate, name),
        version=version,
        upgrade=upgrade,
    )


def _check_version(version: object, upgrade: object, name: str) -> None:
    check_version(version, f"job {name!r}: version", error=InvalidJobDefinition)
    if upgrade is not None and not callable(upgrade):
        raise InvalidJobDefinition(
            f"job {name!r}: upgrade must be a function (from_version, data) -> data, "
            f"got {upgrade!r}"
        )
    if inspect.iscoroutinefunction(upgrade):
        raise InvalidJobDefinition(
            f"job {name!r}: upgrade must be a plain function, not `async def`: it reshapes the "
            "payload's data, without I/O, before the payload is validated"
        )
    if upgrade is not None and version == 1:
        raise InvalidJobDefinition(
            f"job {name!r}: upgrade turns payloads of older versions into the current one, but "
            "version is 1: raise version= when the payload's shape changes"
        )


def _rate_limit(value: object, name: str, what: str) -> Rate | None:
    if value is not None and not isinstance(value, Rate):
        raise InvalidJobDefinition(
            f"job {name!r}: {what} must be a conveyor.Rate, e.g. Rate(10, per=1), got {value!r}"
        )
    return value


def _group_rate(value: object, name: str) -> Rate | None:
    rate = _rate_limit(value, name, "group_rate")
    if rate is not None and rate.count > MAX_GROUP_RATE_COUNT:
        raise InvalidJobDefinition(
            f"job {name!r}: group_rate allows at most {MAX_GROUP_RATE_COUNT} starts per window, "
            f"got {rate.count}"
        )
    return rate


def _check_group(key: object, concurrency: object, rate: object, name: str) -> None:
    """Refuse group settings that cannot work."""
    if key is not None and not callable(key):
        raise InvalidJobDefinition(
            f"job {name!r}: group_key must be a function of the payload, got {key!r}"
        )
    if key is None and (concurrency is not None or rate is not None):
        raise InvalidJobDefinition(
            f"job {name!r}: group_concurrency and group_rate limit each group: they need a "
            "group_key"
        )
    if concurrency is not None and (
        not isinstance(concurrency, int)
        or isinstance(concurrency, bool)
        or not 1 <= concurrency <= MAX_GROUP_CONCURRENCY
    ):
        raise InvalidJobDefinition(
            f"job {name!r}: group_concurrency must be a whole number from 1 to "
            f"{MAX_GROUP_CONCURRENCY}, got {concurrency!r}"
        )
