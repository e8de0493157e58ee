"""Tracing with OpenTelemetry: a job carries its producer's span to the worker that runs it.

Install ``conveyor[otel]`` (``opentelemetry-api``) and configure an SDK as usual: nothing else
is needed. Then

* every enqueue (``Queue.enqueue``, ``enqueue_many``, ``enqueue_by_name``, their ``SyncQueue``
  forms) makes a PRODUCER span ``send <queue>`` (one per call, for a batch too: see
  :mod:`conveyor.tracing._otel`), and writes its context into each new job's headers
  (``traceparent``, ``tracestate``, ``baggage``: whatever the configured propagator writes);
* every attempt of a job makes a CONSUMER span ``process <queue>`` around the handler (and the
  worker's other middleware), linked to the producer's span and, by default, its child; the
  handler's own spans are children of it, in async and sync handlers alike;
* both follow the OpenTelemetry messaging conventions (``messaging.system`` = ``conveyor``,
  ``messaging.operation.name`` / ``.type``, ``messaging.destination.name`` = the queue,
  ``messaging.message.id`` = the job id) and add ``conveyor.job.name``,
  ``conveyor.job.attempt`` and ``conveyor.job.outcome``.

Turning it off: ``Queue(..., tracing=False)`` and ``WorkerConfig(tracing=False)``, or for a
whole process the variable OpenTelemetry's own instrumentations obey,
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=conveyor``. ``tracing=True`` insists (and raises if the
API is not installed); the default, ``None``, traces when the API can be imported.

Cost: without OpenTelemetry installed nothing of it is imported and the enqueue and handler
paths do no extra work (the switch is decided once, when a Queue is built or a Worker starts,
and whether the API imports is tried once per process). With the
API but no SDK (no tracer provider set) enqueues inject nothing unless a valid span context is
already current (then it is passed on, as the API does), and a worker that starts without an
SDK installs no middleware at all. (A middleware from :func:`middleware` registered by hand
still passes a stored context on to the handler when no SDK is set.)

This module never imports OpenTelemetry at import time; :mod:`conveyor.tracing._otel` does.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from conveyor._errors import InvalidArgument

if TYPE_CHECKING:
    from conveyor._middleware import Middleware
    from conveyor.tracing._otel import Producer

# The variable OpenTelemetry's auto-instrumentation reads to leave named instrumentations out.
DISABLE_ENV: Final = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
INSTRUMENTATION_NAME: Final = "conveyor"

_importable: bool | None = None


def available() -> bool:
    """Whether the OpenTelemetry API can be imported; tried once per process, then remembered
    (a failed import leaves nothing of it in ``sys.modules``)."""
    global _importable
    if _importable is None:
        try:
            import opentelemetry.trace  # noqa: F401  # pyright: ignore[reportUnusedImport]
        except ImportError:
            _importable = False
        else:
            _importable = True
    return _importable


def disabled_by_env() -> bool:
    """``conveyor`` is listed in ``$OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``."""
    listed = os.environ.get(DISABLE_ENV)
    if not listed:
        return False
    names = {name.strip().lower() for name in listed.split(",")}
    return INSTRUMENTATION_NAME in names or "*" in names


def enabled(tracing: bool | None) -> bool:
    """Whether to trace, given a ``tracing=`` argument: ``False`` never, ``True`` always (an
    :class:`InvalidArgument` if the API is missing), ``None`` when the API is importable and
    the environment does not disable it."""
    if tracing is None:
        return not disabled_by_env() and available()
    if not isinstance(tracing, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgument(f"tracing must be True, False or None, got {tracing!r}")
    if tracing and not available():
        raise InvalidArgument(
            "tracing=True needs the OpenTelemetry API: pip install 'conveyor[otel]'"
        )
    return tracing


def producer(tracing: bool | None) -> Producer | None:
    """What a :class:`~conveyor.Queue` traces its enqueues with (None: it does not)."""
    if not enabled(tracing):
        return None
    from conveyor.tracing._otel import Producer

    return Producer()


def worker_middleware(tracing: bool | None) -> Middleware | None:
    """The middleware a :class:`~conveyor.Worker` puts outermost when it starts (None: it
    does not trace). Without an SDK configured by then there is nothing to record, and the
    worker runs without it: a middleware costs every job a few microseconds, which is all
    the work a no-op handler does."""
    if not enabled(tracing):
        return None
    from conveyor.tracing._otel import sdk_configured

    return middleware() if sdk_configured(now=True) else None


def middleware(*, parent: bool = True) -> Middleware:
    """A middleware that runs each attempt inside a ``process <queue>`` CONSUMER span.

    Workers install one themselves (outermost, with ``parent=True``). To have the consumer
    span only *linked* to the producer's (a new trace per attempt, as the messaging
    conventions do by default), turn the worker's off and register this one first:
    ``WorkerConfig(tracing=False)`` then ``worker.use(conveyor.tracing.middleware(parent=False))``.
    """
    if not available():
        raise InvalidArgument(
            "conveyor.tracing.middleware needs the OpenTelemetry API: pip install 'conveyor[otel]'"
        )
    from conveyor.tracing._otel import TracingMiddleware

    return TracingMiddleware(parent=parent)


__all__ = [
    "DISABLE_ENV",
    "available",
    "disabled_by_env",
    "enabled",
    "middleware",
    "producer",
    "worker_middleware",
]
