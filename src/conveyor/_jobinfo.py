"""Public, read-only views of stored jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor._context import epoch_to_datetime
from conveyor.core.headers import decode_headers
from conveyor.core.secrets import redact
from conveyor.drivers.records import AttemptError, JobRecord, JobState


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job: what ``Queue.get`` and ``Queue.list_jobs`` return."""

    id: str
    name: str
    queue: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    stalls: int
    # The error of the latest attempt that had one (None once the job completed), and the
    # errors of earlier attempts, oldest first, each with its attempt number and time.
    error: str | None
    payload_json: bytes
    result_json: bytes | None
    seq: int
    errors: tuple[AttemptError, ...] = ()
    cancel_requested: bool = False  # running, and someone asked to cancel it
    # The latest progress its handler reported (a fraction from 0 to 1), its message, and when.
    progress: float | None = None
    progress_message: str | None = None
    progress_at: datetime | None = None
    # When its own retention deletes it (keep_completed / keep_failed), once it finished.
    expires_at: datetime | None = None
    # The group it belongs to (its definition's ``group_key``: the job name, ':' and the key).
    group: str | None = None
    # What travelled with the job (``traceparent``, ``conveyor-secrets``, ...).
    headers: dict[str, str] = field(default_factory=dict[str, str])

    @property
    def error_attempt(self) -> int | None:
        """The attempt ``error`` belongs to, when the history records it."""
        if self.error is None or not self.errors:
            return None
        last = self.errors[-1]
        return last.attempt if self.error.startswith(last.error[:200]) else None

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)

    @property
    def redacted_payload(self) -> Any:
        """The payload with its secret fields (``SecretStr``, ``SecretBytes``) shown as
        ``**********``: what to show people and logs."""
        return redact(self.payload, self.headers)

    @property
    def result(self) -> Any:
        return None if self.result_json is None else json.loads(self.result_json)

    @classmethod
    def from_record(cls, record: JobRecord) -> JobInfo:
        return cls(
            id=record.id,
            name=record.name,
            queue=record.queue,
            state=record.state,
            priority=record.priority,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            run_at=epoch_to_datetime(record.run_at),
            enqueued_at=epoch_to_datetime(record.enqueued_at),
            started_at=_maybe(record.started_at),
            finished_at=_maybe(record.finished_at),
            worker_id=record.worker_id,
            stalls=record.stalls,
            error=record.error,
            payload_json=record.payload,
            result_json=record.result,
            seq=record.seq,
            errors=record.errors,
            cancel_requested=record.cancel_requested,
            progress=record.progress,
            progress_message=record.progress_message,
            progress_at=_maybe(record.progress_at),
            expires_at=_maybe(record.expires_at),
            group=record.group,
            headers=decode_headers(record.headers),
        )


def _maybe(value: float | None) -> datetime | None:
    return None if value is None else epoch_to_datetime(value)
