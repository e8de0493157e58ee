"""The OpenTelemetry side of :mod:`conveyor.tracing`; imported only when the API is installed.

Spans follow the OpenTelemetry messaging conventions (semantic conventions 1.27 and later:
``messaging.operation.type`` ``send`` / ``process``):

Producer. One PRODUCER span ``send <queue>`` per enqueue call, current while the jobs are
built and written (so a database client's own spans nest under it), whose context is the
*creation context* injected into every job of the call. For a batch (``enqueue_many`` of more
than one job) that one span covers all of them, with ``messaging.batch.message_count``: the
conventions' alternative, a ``create`` span per job, would make a bulk enqueue of thousands of
jobs pay for thousands of spans, and a shared creation context still tells every job's consumer
where it came from. A batch over several queues is named ``send`` with no destination. With
``connection=`` the span covers building the jobs and, for ``Queue.enqueue*``, the write into
the caller's transaction (``SyncQueue``: the write runs afterwards, in the caller's thread).

Consumer. One CONSUMER span ``process <queue>`` per attempt, made by a middleware the worker
installs outermost, current while the handler and the other middleware run (a sync handler's
thread gets it too: it runs in a copy of the context). It *links* to the job's creation context
(always, as the conventions require) and, by default, also uses it as its *parent*: a job is
one message processed alone, in a task with no ambient span, which is exactly the case where
the conventions allow the parent, and it puts the job's work in the trace of the request that
enqueued it. ``conveyor.tracing.middleware(parent=False)`` makes a root span (a new trace per
attempt) with only the link instead. Should an ambient span exist (``worker.run()`` called
inside a span), it becomes a second link when the producer is the parent.

Retries are attempts: each attempt is its own span, with ``conveyor.job.attempt`` (1, 2, ...),
all linked to the same producer span. Outcomes (``conveyor.job.outcome``):

* ``returned``: the handler returned; status UNSET (instrumentations leave OK to applications).
* ``error``: it raised (``Retry``, ``Permanent`` and a timeout of its own included: the attempt
  failed and counts); status ERROR with the exception recorded and ``error.type`` set.
* ``timeout``: the job's ``timeout`` ran out; ERROR, ``error.type`` = ``timeout``.
* ``snooze`` / ``rate_limited``: the handler asked to run later without spending the attempt
  (:class:`~conveyor.Snooze`, :class:`~conveyor.RateLimited`); not an error of this span, status
  UNSET (a flow-control signal, like an HTTP client's 429 retried by design).
* ``interrupted``: the worker stopped the attempt (the job was cancelled, its lease was lost,
  or the worker shut down and handed it back); status UNSET: nothing failed in the handler.

A payload that no longer validates, or a job name the worker does not serve, fails before any
middleware runs: such a job has no ``process`` span.

Nothing here may fail a job or an enqueue: headers a propagator writes are filtered (only text,
no ``conveyor-`` names) and cut to ``traceparent`` alone if they would take more than
:data:`MAX_TRACE_HEADER_BYTES`; a propagator or SDK that raises while a span starts is logged
(once per place) and the enqueue or attempt goes on untraced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import Final

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from conveyor import __version__
from conveyor._errors import RateLimited, Snooze
from conveyor._middleware import CallNext, JobCall
from conveyor.drivers.records import NewJob

log = logging.getLogger("conveyor.tracing")

MAX_TRACE_HEADER_BYTES: Final = 2048  # of the 8192 a job's headers may take
SYSTEM: Final = "conveyor"

# Attribute names (the messaging ones as in the semantic conventions' registry).
MESSAGING_SYSTEM: Final = "messaging.system"
OPERATION_NAME: Final = "messaging.operation.name"
OPERATION_TYPE: Final = "messaging.operation.type"
DESTINATION: Final = "messaging.destination.name"
MESSAGE_ID: Final = "messaging.message.id"
BATCH_COUNT: Final = "messaging.batch.message_count"
CLIENT_ID: Final = "messaging.client.id"
ERROR_TYPE: Final = "error.type"
JOB_NAME: Final = "conveyor.job.name"
JOB_ATTEMPT: Final = "conveyor.job.attempt"
JOB_MAX_ATTEMPTS: Final = "conveyor.job.max_attempts"
JOB_OUTCOME: Final = "conveyor.job.outcome"

_tracer_: Tracer | None = None
_complained: set[str] = set()


def _broken(where: str, exc: Exception) -> None:
    """Log, once per ``where``, that tracing failed there (the work goes on without it)."""
    if where in _complained:
        return
    _complained.add(where)
    log.error(
        "tracing failed %s; going on without it (further failures there are not logged): %r",
        where,
        exc,
        exc_info=exc,
    )


_configured = False
_checked_at = float("-inf")
RECHECK_SECONDS: Final = 1.0
_warned_size = False


def _tracer() -> Tracer:
    # A proxy until an SDK sets the global provider, then that provider's: made once.
    global _tracer_
    if _tracer_ is None:
        _tracer_ = trace.get_tracer("conveyor", __version__)
    return _tracer_


def sdk_configured(*, now: bool = False) -> bool:
    """Whether a real tracer provider is set (not the API's proxy or no-op one). Once true it
    stays true (the global provider can be set only once); while false it is looked up again
    at most every :data:`RECHECK_SECONDS` (or at once, with ``now``), as the lookup reads the
    environment and would be most of what an untraced enqueue pays."""
    global _configured, _checked_at
    if _configured:
        return True
    at = time.monotonic()
    if not now and at - _checked_at < RECHECK_SECONDS:
        return False
    _checked_at = at
    provider = trace.get_tracer_provider()
    _configured = not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return _configured


def _carrier() -> dict[str, str] | None:
    """The current context as the configured propagator writes it, made safe to store."""
    written: dict[str, str] = {}
    propagate.inject(written)
    headers = {
        k: v
        for k, v in written.items()
        if isinstance(k, str)  # pyright: ignore[reportUnnecessaryIsInstance]
        and isinstance(v, str)  # pyright: ignore[reportUnnecessaryIsInstance]
        and k
        and not k.startswith("conveyor-")
        and "\x00" not in k
        and "\x00" not in v
    }
    if sum(len(k.encode()) + len(v.encode()) + 6 for k, v in headers.items()) > (
        MAX_TRACE_HEADER_BYTES
    ):
        global _warned_size
        if not _warned_size:
            _warned_size = True
            log.warning(
                "the trace context takes over %d bytes (a large baggage or tracestate?): jobs "
                "carry only its traceparent (logged once)",
                MAX_TRACE_HEADER_BYTES,
            )
        headers = {k: v for k, v in headers.items() if k == "traceparent"}
    return headers or None


def _single(queues: Sequence[str]) -> str | None:
    first = queues[0] if queues else None
    return first if all(q == first for q in queues) else None


class Send:
    """One enqueue call's PRODUCER span, as a context manager around building and writing the
    jobs. ``headers`` is the trace context each new job gets (None: none)."""

    __slots__ = ("_queues", "_span", "_token", "headers")

    def __init__(self, queues: Sequence[str] | None) -> None:
        self._queues = queues  # None: not known before the jobs are built (routed by name)
        self._span: Span | None = None
        self._token: Token[Context] | None = None
        self.headers: dict[str, str] | None = None

    def __enter__(self) -> Send:
        try:
            self._start()
        except Exception as exc:  # a broken propagator or SDK: enqueue untraced
            _broken("starting an enqueue's span", exc)
            if self._token is not None:
                context.detach(self._token)
            if self._span is not None:
                self._span.end()
            self._span, self._token, self.headers = None, None, None
        return self

    def _start(self) -> None:
        if not sdk_configured():
            # The API alone: no span to make, but a context someone else made (a framework's
            # incoming request) is passed on, as the API's no-op tracer would.
            if trace.get_current_span().get_span_context().is_valid:
                self.headers = _carrier()
            return
        queue = None if self._queues is None else _single(self._queues)
        attributes: dict[str, AttributeValue] = {
            MESSAGING_SYSTEM: SYSTEM,
            OPERATION_NAME: "send",
            OPERATION_TYPE: "send",
        }
        if queue is not None:
            attributes[DESTINATION] = queue
        span = self._span = _tracer().start_span(
            "send" if queue is None else f"send {queue}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = context.attach(trace.set_span_in_context(span))
        self.headers = _carrier()

    def built(self, jobs: Sequence[NewJob]) -> None:
        """Describe the jobs the span sends (their ids, and their queue if it was routed)."""
        span = self._span
        if span is None or not span.is_recording() or not jobs:
            return
        if len(jobs) == 1:
            span.set_attribute(MESSAGE_ID, jobs[0].id)
            span.set_attribute(JOB_NAME, jobs[0].name)
        else:
            span.set_attribute(BATCH_COUNT, len(jobs))
        if self._queues is None:
            queue = _single([job.queue for job in jobs])
            if queue is not None:
                span.update_name(f"send {queue}")
                span.set_attribute(DESTINATION, queue)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        span = self._span
        if span is None:
            return
        if self._token is not None:
            context.detach(self._token)
        if exc is not None:
            _failed(span, exc)
        span.end()


class Producer:
    """What a traced :class:`~conveyor.Queue` holds: ``with producer.send(queues) as sent``."""

    __slots__ = ()

    def send(self, queues: Sequence[str] | None) -> Send:
        return Send(queues)


class TracingMiddleware:
    """The worker's middleware: each attempt in a ``process <queue>`` CONSUMER span (see the
    module's docstring for its links, parent, attributes and status)."""

    __slots__ = ("parent",)

    def __init__(self, *, parent: bool = True) -> None:
        self.parent = parent

    def __repr__(self) -> str:
        return f"conveyor.tracing.middleware(parent={self.parent})"

    async def __call__(self, call: JobCall, call_next: CallNext) -> object:
        headers = call.headers
        if not sdk_configured():
            if not _carries_context(headers):
                return await call_next()
            # No SDK: nothing to record, but the handler's own enqueues pass the context on.
            token = context.attach(propagate.extract(headers))
            try:
                return await call_next()
            finally:
                context.detach(token)
        try:
            span, token = self._start(call)
        except Exception as exc:  # a broken propagator or SDK: run the attempt untraced
            _broken("starting an attempt's span", exc)
            return await call_next()
        outcome = "returned"
        try:
            return await call_next()
        except BaseException as exc:
            outcome = _attempt_failed(span, exc, call)
            raise
        finally:
            context.detach(token)
            span.set_attribute(JOB_OUTCOME, outcome)
            span.end()

    def _start(self, call: JobCall) -> tuple[Span, Token[Context]]:
        ctx = call.ctx
        extracted = _extract(call.headers) if _carries_context(call.headers) else None
        producer = trace.get_current_span(extracted).get_span_context() if extracted else None
        links: list[Link] = []
        parent: Context | None = None  # None: the current context (an ambient span, if any)
        if producer is not None and producer.is_valid:
            links.append(Link(producer))
            ambient = trace.get_current_span().get_span_context()
            if self.parent:
                parent = extracted
                if ambient.is_valid:
                    links.append(Link(ambient))
            elif not ambient.is_valid and extracted is not None:
                # A root span, keeping what else the producer sent (its baggage).
                parent = trace.set_span_in_context(trace.INVALID_SPAN, extracted)
        attributes: dict[str, AttributeValue] = {
            MESSAGING_SYSTEM: SYSTEM,
            OPERATION_NAME: "process",
            OPERATION_TYPE: "process",
            DESTINATION: ctx.queue,
            MESSAGE_ID: ctx.job_id,
            CLIENT_ID: ctx.worker_id,
            JOB_NAME: ctx.job_name,
            JOB_ATTEMPT: ctx.attempt,
            JOB_MAX_ATTEMPTS: ctx.max_attempts,
        }
        span = _tracer().start_span(
            f"process {ctx.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        return span, context.attach(trace.set_span_in_context(span, parent))


# The last headers extracted, and their context: the jobs of one batch carry the same headers,
# and parsing them is most of what this middleware costs beside the span itself.
_last_extracted: tuple[object, Mapping[str, str], Context] | None = None


def _extract(headers: Mapping[str, str]) -> Context:
    """The context the configured propagator reads from ``headers`` (contexts are immutable:
    one read serves consecutive jobs of the same batch)."""
    global _last_extracted
    last = _last_extracted
    propagator = propagate.get_global_textmap()
    if last is not None and last[0] is propagator and last[1] == headers:
        return last[2]
    extracted = propagator.extract(headers)
    _last_extracted = (propagator, headers, extracted)
    return extracted


def _carries_context(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` hold anything but Conveyor's own (a propagator's keys may be any:
    ``traceparent``, B3's, Jaeger's)."""
    return any(not key.startswith("conveyor-") for key in headers)


def _attempt_failed(span: Span, exc: BaseException, call: JobCall) -> str:
    """Record how the attempt ended on ``span``; the outcome's name."""
    if isinstance(exc, Snooze):
        return "snooze"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, asyncio.CancelledError):
        # The runner sets ``cancelled`` before it cancels the task (a cancel, a lost lease,
        # shutdown); the job's deadline cancels without it; a CancelledError nobody asked for
        # is the handler's own, an ordinary error.
        task = asyncio.current_task()
        stopped = task is not None and task.cancelling() > 0
        if call.ctx.cancelled.is_set() or (stopped and call.definition.timeout is None):
            return "interrupted"
        if stopped:
            span.set_attribute(ERROR_TYPE, "timeout")
            span.set_status(
                Status(StatusCode.ERROR, f"timed out after {call.definition.timeout:g}s")
            )
            return "timeout"
    _failed(span, exc)
    return "error"


def _failed(span: Span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    span.record_exception(exc, escaped=True)
    span.set_attribute(ERROR_TYPE, _error_type(exc))
    span.set_status(Status(StatusCode.ERROR, _shown(exc)))


def _error_type(exc: BaseException) -> str:
    """The exception's fully qualified class name, as ``error.type`` wants it; Conveyor's own
    by their public name (``conveyor.Retry``), builtins by their bare name."""
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("conveyor._"):
        module = "conveyor"
    return f"{module}.{cls.__qualname__}"


def _shown(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception as broken:  # an exception whose __str__ raises
        text = f"{type(exc).__name__}: <the exception cannot be shown: {broken!r}>"
    return text if len(text) <= 500 else text[:497] + "..."
