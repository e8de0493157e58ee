"""``assert_enqueued``: which jobs a test's code enqueued, read from the in-memory store."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from conveyor._definition import JobDef
from conveyor._errors import PayloadValidationError
from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor._sync import SyncQueue
from conveyor.core.serialization import decode_payload
from conveyor.drivers.records import JobRecord
from conveyor.testing._queues import memory_store

P = TypeVar("P", bound=BaseModel)

_SHOWN_JOBS = 20  # at most this many jobs are listed in a failure
_SHOWN_CHARS = 300  # of each payload


def assert_enqueued(
    queue: Queue | SyncQueue,
    definition: JobDef[P, Any],
    payload: P | Mapping[str, Any] | None = None,
    *,
    count: int | None = None,
) -> list[JobInfo]:
    """The jobs of ``definition`` in ``queue`` (in enqueue order, whatever their state now),
    that carry ``payload``; fails with a list of what *was* enqueued unless there is at least
    one (or exactly ``count``).

    ``payload``: a model instance matches a job whose stored payload, validated as the worker
    would, equals it; a mapping matches a job whose payload has those values for those
    fields (the others may be anything). ``queue``: a queue on the in-memory driver (the
    ``conveyor_queue`` or ``conveyor_sync_queue`` fixture), read at once, without awaiting.
    """
    if count is not None and count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    store = memory_store(queue, "assert_enqueued")
    with store.lock:
        records = sorted(store.jobs.values(), key=lambda r: r.seq)
    named = [r for r in records if r.name == definition.name]
    matching = [r for r in named if _matches(r, definition, payload)]
    if (count is None and matching) or len(matching) == count:
        return [JobInfo.from_record(r) for r in matching]
    raise AssertionError(_failure(definition, payload, count, matching, named, records))


def _decoded(record: JobRecord, definition: JobDef[Any, Any]) -> BaseModel | None:
    try:
        stored: BaseModel = decode_payload(record.name, definition.payload_type, record.payload)
    except PayloadValidationError:
        return None
    return stored


def _matches(
    record: JobRecord, definition: JobDef[Any, Any], payload: BaseModel | Mapping[str, Any] | None
) -> bool:
    if payload is None:
        return True
    stored = _decoded(record, definition)
    if stored is None:
        return False
    if isinstance(payload, BaseModel):
        return stored == payload
    return not _field_differences(stored, payload)


def _field_differences(stored: BaseModel, expected: Mapping[str, Any]) -> list[str]:
    """``field: expected X, got Y`` for each field of ``expected`` the stored payload differs
    in; a value matches the field's Python value or its JSON form (a UUID or its string)."""
    python = stored.model_dump()
    as_json = stored.model_dump(mode="json")
    differences: list[str] = []
    for name, value in expected.items():
        if name not in python:
            differences.append(f"{name}: expected {value!r}, but the payload has no such field")
        elif value != python[name] and value != as_json[name]:
            differences.append(f"{name}: expected {value!r}, got {python[name]!r}")
    return differences


def _differences(
    record: JobRecord, definition: JobDef[Any, Any], payload: BaseModel | Mapping[str, Any]
) -> list[str]:
    stored = _decoded(record, definition)
    if stored is None:
        return [f"its payload is not a valid {definition.payload_type.__name__}"]
    if isinstance(payload, BaseModel):
        if type(stored) is not type(payload):
            return [f"expected a {type(payload).__name__}, got a {type(stored).__name__}"]
        return _field_differences(stored, payload.model_dump())
    return _field_differences(stored, payload)


def _shown_payload(record: JobRecord) -> str:
    try:
        text = json.dumps(json.loads(record.payload), sort_keys=True)
    except ValueError:
        text = repr(record.payload)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _failure(
    definition: JobDef[Any, Any],
    payload: BaseModel | Mapping[str, Any] | None,
    count: int | None,
    matching: list[JobRecord],
    named: list[JobRecord],
    records: list[JobRecord],
) -> str:
    wanted = "at least 1 job" if count is None else f"{count} job{'s' if count != 1 else ''}"
    carrying = "" if payload is None else f" with payload {payload!r}"
    lines = [
        f"expected {wanted} {definition.name!r}{carrying} enqueued, found {len(matching)}",
    ]
    if named:
        lines.append(f"jobs {definition.name!r} enqueued ({len(named)}):")
        for record in named[:_SHOWN_JOBS]:
            mark = "  (matches)" if record in matching else ""
            lines.append(
                f"  - id={record.id} queue={record.queue} state={record.state.value} "
                f"payload={_shown_payload(record)}{mark}"
            )
            if payload is not None and record not in matching:
                lines.extend(f"      {d}" for d in _differences(record, definition, payload))
        if len(named) > _SHOWN_JOBS:
            lines.append(f"  ... and {len(named) - _SHOWN_JOBS} more")
    else:
        lines.append(f"no job {definition.name!r} was enqueued")
    others = Counter(r.name for r in records if r.name != definition.name)
    if others:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(others.items()))
        lines.append(f"other jobs enqueued: {listed}")
    elif not named:
        lines[-1] = "nothing was enqueued"
    return "\n".join(lines)
