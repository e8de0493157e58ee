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
from conveyor._hooks import JobEvent
from conveyor._jobinfo import JobInfo
from conveyor._middleware import CallNext, JobCall, Middleware
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
    QueueStats,
    Retention,
    WorkerInfo,
)
from conveyor.runtime.lifecycle import WorkerStats
from conveyor.runtime.observers import Observer

__version__ = "0.1.0"

__all__ = [
    "AttemptError",
    "BackendError",
    "BackendUnavailable",
    "Backoff",
    "CallNext",
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
    "JobCall",
    "JobContext",
    "JobDef",
    "JobEvent",
    "JobFailed",
    "JobHandle",
    "JobInfo",
    "JobNotFound",
    "JobRequest",
    "JobState",
    "Middleware",
    "MigrationRequired",
    "MissingHandlers",
    "Observer",
    "PayloadTooLarge",
    "PayloadValidationError",
    "Permanent",
    "Queue",
    "QueueInfo",
    "QueueStats",
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
