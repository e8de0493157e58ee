"""``make_context``: a :class:`JobContext` for calling a handler directly in a unit test."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from conveyor._context import JobContext, JobLogger
from conveyor._definition import JobDef
from conveyor._ids import new_job_ids


def make_context(
    definition: JobDef[Any, Any],
    *,
    attempt: int = 1,
    job_id: str | None = None,
    max_attempts: int | None = None,
    queue: str | None = None,
    enqueued_at: datetime | None = None,
    worker_id: str = "test-worker",
    cancelled: threading.Event | None = None,
) -> JobContext:
    """The context a worker would pass to ``definition``'s handler on attempt ``attempt``:
    ``await handle_send_invite(payload, make_context(send_invite))``.

    ``max_attempts`` and ``queue`` default to the definition's, ``job_id`` to a fresh id,
    ``enqueued_at`` to now. ``ctx.logger`` logs to ``conveyor.job.<name>`` with the job's
    fields, as in a worker; ``ctx.progress()`` is kept (``ctx.last_progress``) rather than
    written anywhere; pass ``cancelled`` (or set ``ctx.cancelled``) to test how a handler
    stops.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    job_id = new_job_ids(1)[0] if job_id is None else job_id
    queue = definition.queue if queue is None else queue
    return JobContext(
        job_id=job_id,
        job_name=definition.name,
        queue=queue,
        attempt=attempt,
        max_attempts=definition.attempts if max_attempts is None else max_attempts,
        enqueued_at=datetime.now(UTC) if enqueued_at is None else enqueued_at,
        worker_id=worker_id,
        logger=JobLogger(
            logging.getLogger(f"conveyor.job.{definition.name}"),
            {"job_id": job_id, "job_name": definition.name, "queue": queue, "attempt": attempt},
        ),
        cancelled=threading.Event() if cancelled is None else cancelled,
    )
