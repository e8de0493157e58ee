"""What the dashboard needs from the queue that not every version of it offers yet: per-minute
throughput (``Queue.stats``), deleting finished jobs (``Queue.delete``), job headers and the
redacted display of payloads. Each falls back to "not available" when its feature is absent."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor.drivers.records import ChangeResult


class MinuteStats(Protocol):
    """One (queue, minute) bucket of ``Queue.stats``."""

    @property
    def queue(self) -> str: ...
    @property
    def minute(self) -> int: ...
    @property
    def completed(self) -> int: ...
    @property
    def retried(self) -> int: ...
    @property
    def failed(self) -> int: ...


def has_stats(queue: Queue) -> bool:
    return callable(getattr(queue, "stats", None))


async def queue_stats(queue: Queue, minutes: int) -> list[MinuteStats]:
    read = getattr(queue, "stats", None)
    if not callable(read):
        return []
    return list(cast(Sequence[MinuteStats], await read(minutes=minutes)))


def can_delete(queue: Queue) -> bool:
    return callable(getattr(queue, "delete", None))


async def delete_jobs(queue: Queue, ids: Sequence[str]) -> list[ChangeResult]:
    delete = getattr(queue, "delete", None)
    if not callable(delete):
        raise NotImplementedError("this version of Conveyor cannot delete single jobs")
    return list(cast(Sequence[ChangeResult], await delete(list(ids))))


def job_headers(info: JobInfo) -> dict[str, str]:
    return dict(cast(Mapping[str, str], getattr(info, "headers", None) or {}))


def redacted_payload(payload: bytes, headers: Mapping[str, str]) -> str:
    """Pretty JSON of ``payload`` with its secret fields replaced."""
    try:
        redaction = importlib.import_module("conveyor.core.redaction")
    except ImportError:
        pass
    else:
        redact: Any = redaction.redacted_payload
        return str(redact(payload, headers))
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return payload.decode("utf-8", "replace")
