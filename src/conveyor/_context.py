"""What a handler knows about the job it runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the job's fields to every record, keeping any ``extra`` the caller passes too
    (the stdlib adapter would replace it)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


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
    cancelled: threading.Event = field(default_factory=threading.Event)
    _progress: list[Any] = field(default_factory=list[Any], repr=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def progress(self, value: Any) -> None:
        """Report progress (a number or a small JSON-able value); logged, last value kept."""
        self._progress[:] = [value]
        self.logger.info("job progress", extra={"progress": value})

    @property
    def last_progress(self) -> Any:
        return self._progress[0] if self._progress else None


def epoch_to_datetime(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)
