"""Conveyor: typed background jobs for Python.

Declare jobs with :func:`job`, enqueue them with :class:`Queue` (or :class:`SyncQueue`), and run
them with :class:`Worker`. See the README for a tour.
"""

from conveyor._config import WorkerConfig
from conveyor._context import JobContext
from conveyor._dedup import Debounce, DedupPolicy, Throttle, UntilFinished, UntilStarted
from conveyor._definition import JobDef, JobRequest, job
from conveyor._errors import (
    BackendError,
    BackendUnavailable,
    ConveyorError,
    DuplicateHandler,
    HandlerSignal,
    InvalidArgument,
    InvalidJobDefinition,
    JobFailed,
    JobNotFound,
    MigrationRequired,
    MissingHandlers,
    PayloadTooLarge,
    PayloadValidationError,
    Permanent,
    RateLimited,
    ResultTimeout,
    Retry,
    Snooze,
    UnknownJob,
    UnsupportedURL,
    WorkerFailed,
)
from conveyor._handle import JobHandle
from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor._sync import SyncJobHandle, SyncQueue
from conveyor._worker import Worker
from conveyor.core.backoff import Backoff, Exponential, Fixed
from conveyor.core.clock import FakeClock
from conveyor.core.rate import Rate
from conveyor.drivers.records import (
    AttemptError,
    ChangeResult,
    ChangeStatus,
    CronFireStatus,
    CronInfo,
    InsertStatus,
    JobState,
    QueueInfo,
    Retention,
    WorkerInfo,
)
from conveyor.runtime.lifecycle import WorkerStats

__version__ = "0.1.0"

__all__ = [
    "AttemptError",
    "BackendError",
    "BackendUnavailable",
    "Backoff",
    "ChangeResult",
    "ChangeStatus",
    "ConveyorError",
    "CronFireStatus",
    "CronInfo",
    "Debounce",
    "DedupPolicy",
    "DuplicateHandler",
    "Exponential",
    "FakeClock",
    "Fixed",
    "HandlerSignal",
    "InsertStatus",
    "InvalidArgument",
    "InvalidJobDefinition",
    "JobContext",
    "JobDef",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobRequest",
    "JobState",
    "MigrationRequired",
    "MissingHandlers",
    "PayloadTooLarge",
    "PayloadValidationError",
    "Permanent",
    "Queue",
    "QueueInfo",
    "Rate",
    "RateLimited",
    "ResultTimeout",
    "Retention",
    "Retry",
    "Snooze",
    "SyncJobHandle",
    "SyncQueue",
    "Throttle",
    "UnknownJob",
    "UnsupportedURL",
    "UntilFinished",
    "UntilStarted",
    "Worker",
    "WorkerConfig",
    "WorkerFailed",
    "WorkerInfo",
    "WorkerStats",
    "__version__",
    "job",
]
