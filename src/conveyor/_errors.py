"""The public exception tree.

Two families live here. Errors a *caller* can meet (bad payloads, unknown jobs, an unreachable
backend) derive from :class:`ConveyorError`. Control-flow signals a *handler* raises (``Retry``,
``Permanent``, ``Snooze``) derive from :class:`HandlerSignal`; they are not failures of Conveyor
and the worker turns each into exactly one state transition.
"""

from __future__ import annotations

from datetime import timedelta

from conveyor import _validation


class ConveyorError(Exception):
    """Base class of every error Conveyor raises to its callers."""


class PayloadValidationError(ConveyorError, ValueError):
    """A payload does not match its job definition's model."""

    def __init__(self, job_name: str, detail: str) -> None:
        super().__init__(f"invalid payload for job {job_name!r}: {detail}")
        self.job_name = job_name
        self.detail = detail


class PayloadTooLarge(ConveyorError, ValueError):
    """The encoded payload is larger than the queue's ``max_payload_bytes``."""

    def __init__(self, job_name: str, size: int, limit: int) -> None:
        super().__init__(
            f"payload for job {job_name!r} is {size} bytes, over the limit of {limit} bytes; "
            "store large data elsewhere (object storage, a database row) and enqueue its key"
        )
        self.job_name = job_name
        self.size = size
        self.limit = limit


class UnknownJob(ConveyorError, LookupError):
    """No job definition or handler is registered under this name."""

    def __init__(self, job_name: str, known: list[str] | None = None) -> None:
        hint = f"; known jobs: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"no handler is registered for job {job_name!r}{hint}")
        self.job_name = job_name


class MissingHandlers(ConveyorError):
    """A worker was asked to serve definitions that have no handler."""

    def __init__(self, job_names: list[str]) -> None:
        names = ", ".join(sorted(job_names))
        super().__init__(
            f"no handler for job definition(s): {names}; register one with @worker.handles(...)"
        )
        self.job_names = sorted(job_names)


class WorkerFailed(ConveyorError):
    """A worker stopped because one of its background loops kept failing (it exits non-zero
    rather than run on without it)."""


class DuplicateHandler(ConveyorError):
    """Two handlers were registered for the same job name."""


class InvalidArgument(ConveyorError, ValueError):
    """A call was given an invalid argument (a bad ``job_id``, ``delay``, ``priority``...)."""


class InvalidJobDefinition(InvalidArgument):
    """A job definition was declared with invalid options."""


class BackendUnavailable(ConveyorError):
    """The storage backend cannot be reached or refused the operation for infrastructure reasons
    (worth trying again later)."""


class BackendError(ConveyorError):
    """The backend refused an operation for a reason trying again will not fix: a script or
    statement that rejected its input, an integrity violation, data it cannot read. The message
    names the operation and the backend's own error."""


class MigrationRequired(ConveyorError):
    """The database schema is newer than this version of Conveyor (upgrade Conveyor)."""


class UnsupportedURL(ConveyorError, ValueError):
    """A backend URL names a scheme Conveyor does not know."""


class JobNotFound(ConveyorError, LookupError):
    """The job does not exist (it was never enqueued, or retention removed it)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found (never enqueued, or pruned by retention)")
        self.job_id = job_id


class JobFailed(ConveyorError):
    """Awaiting a result of a job that ended in ``failed`` or ``cancelled``."""

    def __init__(self, job_id: str, state: str, error: str | None) -> None:
        super().__init__(f"job {job_id!r} ended {state}: {error or 'no error recorded'}")
        self.job_id = job_id
        self.state = state
        self.error = error


class ResultTimeout(ConveyorError, TimeoutError):
    """The job did not finish within the time given to ``result()``."""

    def __init__(self, job_id: str, timeout: float, state: str) -> None:
        super().__init__(f"job {job_id!r} still {state} after waiting {timeout:g}s")
        self.job_id = job_id
        self.state = state


class HandlerSignal(Exception):
    """Base of the exceptions a handler raises to steer what happens to its job."""


class Retry(HandlerSignal):
    """Run the job again (now, or after ``delay``); this attempt counts.

    Once attempts are exhausted the job fails like any other error.
    """

    def __init__(self, reason: str = "retry requested", *, delay: float | timedelta | None = None):
        super().__init__(reason)
        self.delay = (
            None if delay is None else _validation.seconds(delay, "delay", error=InvalidArgument)
        )


class Permanent(HandlerSignal):
    """Fail the job at once, with no further attempts: it goes to the failed (dead-letter) set."""


class Snooze(HandlerSignal):
    """Re-schedule the job after ``delay`` without consuming an attempt."""

    def __init__(self, delay: float | timedelta, reason: str = "snoozed") -> None:
        super().__init__(reason)
        self.delay = _validation.seconds(delay, "delay", error=InvalidArgument)


# The longest a handler's RateLimited may hold its queue (the limit of every backend's block).
MAX_RETRY_AFTER = 24 * 3600.0


class RateLimited(HandlerSignal):
    """An upstream service refused the call for now: put the job back without spending an
    attempt, and start no job held by the same limit until ``retry_after`` (a timedelta or
    seconds, at most a day) has passed, on any worker. For a grouped job (``group_key``) that
    is its group: other keys go on. Otherwise, for a definition with a ``rate_limit``, it is
    the definition's queue; for one without (whose queue other definitions may share), only
    this job waits: it is snoozed for ``retry_after``."""

    def __init__(self, retry_after: float | timedelta, reason: str = "rate limited") -> None:
        super().__init__(reason)
        seconds = _validation.seconds(retry_after, "retry_after", error=InvalidArgument)
        if seconds > MAX_RETRY_AFTER:
            raise InvalidArgument(
                f"retry_after must be at most a day ({MAX_RETRY_AFTER:g} s), got {retry_after!r}"
            )
        self.retry_after = seconds
