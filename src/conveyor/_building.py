"""Building jobs: a typed request or a named payload, validated and encoded into the
:class:`~conveyor.drivers.records.NewJob` a driver writes. No I/O here (a named job's route is
asked of the caller): :class:`conveyor.Queue` builds every job before its first write, so a bad
one fails its caller and writes nothing."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from conveyor import _validation
from conveyor._dedup import DedupPolicy, dedup_of
from conveyor._definition import JobRequest, check_queue_name
from conveyor._errors import InvalidArgument
from conveyor._ids import new_job_ids
from conveyor._slots import fast_constructor
from conveyor.core.headers import encode_headers
from conveyor.core.serialization import encode_payload, encode_untyped_payload
from conveyor.core.versions import check_version, version_header
from conveyor.drivers.records import Dedup, JobGroup, NewJob

if TYPE_CHECKING:
    from conveyor.tracing._otel import Send

# enqueue_by_name's arguments, from name to version, as new_job_by_name takes them.
ByName = tuple[
    str,
    Mapping[str, Any] | str | bytes,
    str | None,
    float | timedelta | None,
    datetime | None,
    int,
    str | None,
    int,
    DedupPolicy | None,
    int,
]
Keep = tuple[float | timedelta | None, float | timedelta | None]

_JOB_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,255}\Z")


def new_jobs(
    requests: Sequence[JobRequest[Any, Any]], max_payload_bytes: int, sent: Send | None = None
) -> list[NewJob]:
    """The jobs of ``requests``, in order; traced, they carry ``sent``'s context."""
    ids = iter(new_job_ids(sum(1 for r in requests if r.job_id is None)))
    if sent is None:
        return [new_job(r, ids, None, max_payload_bytes) for r in requests]
    jobs = [new_job(r, ids, sent.headers, max_payload_bytes) for r in requests]
    sent.built(jobs)
    return jobs


def new_job(
    request: JobRequest[Any, Any],
    ids: Iterator[str],
    trace: Mapping[str, str] | None,
    max_payload_bytes: int,
) -> NewJob:
    d = request.definition
    data = encode_payload(d.name, d.payload_type, request.payload, max_payload_bytes)
    dedup, delay = dedup_of(request.dedup, d.name, data, request.delay, request.run_at)
    return build(
        d.name,
        data,
        next(ids) if request.job_id is None else check_job_id(request.job_id),
        delay,
        request.run_at,
        d.priority if request.priority is None else request.priority,
        d.queue if request.queue is None else request.queue,
        d.attempts if request.attempts is None else request.attempts,
        dedup,
        (
            d.keep_completed if request.keep_completed is None else request.keep_completed,
            d.keep_failed if request.keep_failed is None else request.keep_failed,
        ),
        d.group_of(request.payload),
        d.headers,
        trace,
    )


async def new_job_by_name(
    args: ByName,
    keep: Keep,
    max_payload_bytes: int,
    sent: Send | None,
    route: Callable[[str], Awaitable[str]],
) -> NewJob:
    """The job of an ``enqueue_by_name`` call; without a queue, ``route(name)`` names it, asked
    only once everything else was checked (a bad payload fails without a read)."""
    name, payload, job_id, delay, run_at, priority, queue, attempts, dedup, version = args
    headers = version_header(check_version(version, "version", error=InvalidArgument))
    data = encode_untyped_payload(name, payload, max_payload_bytes)
    keyed, delay = dedup_of(dedup, name, data, delay, run_at)
    job_id = new_job_ids(1)[0] if job_id is None else check_job_id(job_id)
    if queue is None:
        queue = await route(name)
    new = build(
        name,
        data,
        job_id,
        delay,
        run_at,
        priority,
        queue,
        attempts,
        keyed,
        keep,
        headers=headers,
        trace=None if sent is None else sent.headers,
    )
    if sent is not None:
        sent.built([new])
    return new


def build(
    name: str,
    data: bytes,
    job_id: str,
    delay: float | timedelta | None,
    run_at: datetime | None,
    priority: int,
    queue: str,
    attempts: int,
    dedup: Dedup | None = None,
    keep: Keep = (None, None),
    group: JobGroup | None = None,
    headers: Mapping[str, str] | None = None,
    trace: Mapping[str, str] | None = None,
) -> NewJob:
    if delay is not None and run_at is not None:
        raise InvalidArgument("pass either delay or run_at, not both")
    if keep == (None, None):  # the usual case, without a validation call per value
        kept: list[float | None] = [None, None]
    else:
        kept = [
            None if k is None else _validation.seconds(k, what, error=InvalidArgument)
            for k, what in zip(keep, ("keep_completed", "keep_failed"), strict=True)
        ]
    return _new_job(
        id=job_id,
        queue=check_queue_name(queue),
        name=name,
        payload=data,
        priority=_validation.priority(priority, error=InvalidArgument),
        max_attempts=_validation.attempts(attempts, error=InvalidArgument),
        run_at=None if run_at is None else timestamp(run_at),
        delay=0.0 if delay is None else _validation.seconds(delay, "delay", error=InvalidArgument),
        dedup=dedup,
        keep_completed=kept[0],
        keep_failed=kept[1],
        group=group,
        # The producer's trace context (conveyor.tracing), under Conveyor's own headers.
        headers=encode_headers({**trace, **(headers or {})} if trace else headers or {}),
    )


# NewJob(...) at a third of the cost, one per enqueued job (every field passed: see _slots).
_new_job: Final = fast_constructor(NewJob)


def check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidArgument(f"invalid job_id {job_id!r}: 1-255 characters, no control characters")
    return job_id


def timestamp(run_at: object) -> float:
    if not isinstance(run_at, datetime) or run_at.tzinfo is None:
        raise InvalidArgument(
            f"run_at must be a timezone-aware datetime, got {run_at!r}; "
            "e.g. datetime.now(UTC) + timedelta(hours=1)"
        )
    stamp = run_at.timestamp()
    if not 0 <= stamp < _validation.MAX_EPOCH:
        raise InvalidArgument(f"run_at must be between 1970 and 2200, got {run_at.isoformat()}")
    return stamp
