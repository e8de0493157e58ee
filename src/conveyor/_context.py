"""What a handler knows about the job it runs."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, eq=False)
class JobContext:
    """Passed to every handler next to its payload.

    ``cancelled`` is set when the job is cancelled, its lease is lost, or the worker's shutdown
    grace runs out; an async handler is also cancelled at that point, while a sync handler (which
    cannot be interrupted) should check it between steps.
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
