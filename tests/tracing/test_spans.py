"""Producer and consumer spans on the memory backend, with an SDK recording in memory."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from conveyor import (
    Fixed,
    JobContext,
    JobState,
    Queue,
    RateLimited,
    Retry,
    Snooze,
    SyncQueue,
    Worker,
    job,
)
from conveyor.core.headers import decode_headers
from tests.conformance.worker.helpers import Num, fast_config, wait_for, wait_state
from tests.tracing.conftest import Spans

echo = job("trace.echo", Num, result=int, queue="mail")
other = job("trace.other", Num, result=int, queue="billing")
flaky = job("trace.flaky", Num, result=int, attempts=3, backoff=Fixed(0), queue="mail")
sync_echo = job("trace.sync", Num, result=str, queue="mail")
nested = job("trace.nested", Num, result=str, queue="mail")
slow = job("trace.slow", Num, attempts=1, timeout=0.2, queue="mail")
napping = job("trace.snooze", Num, result=int, queue="mail")
asked = job("trace.retry", Num, attempts=1, queue="mail")
limited = job("trace.limited", Num, result=int, queue="mail")

tracer = trace.get_tracer("tests.tracing")


def traceparent_of(span: ReadableSpan) -> str:
    """The trace and span ids of ``span`` as a ``traceparent`` header writes them."""
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-"


def ids(ctx: SpanContext | None) -> tuple[int, int]:
    """Trace and span id: a context read back from headers is remote, the original is not."""
    assert ctx is not None
    return ctx.trace_id, ctx.span_id


def linked(span: ReadableSpan) -> list[tuple[int, int]]:
    return [ids(link.context) for link in span.links]


@pytest.fixture
async def queue() -> AsyncIterator[Queue]:
    q = Queue.from_url(f"memory://tracing-{uuid.uuid4().hex}")
    await q.connect()
    try:
        yield q
    finally:
        await q.close()


def serve(queue: Queue, **config: object) -> Worker:
    worker = Worker(queue, config=fast_config(**config), queues=["mail", "billing"])
    attempts: dict[int, int] = {}
    snoozed: set[int] = set()

    @worker.handles(echo)
    async def run_echo(payload: Num, ctx: JobContext) -> int:
        return payload.n

    @worker.handles(other)
    async def run_other(payload: Num, ctx: JobContext) -> int:
        return payload.n

    @worker.handles(flaky)
    async def run_flaky(payload: Num, ctx: JobContext) -> int:
        attempts[payload.n] = ctx.attempt
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt} fails")
        return ctx.attempt

    @worker.handles(sync_echo)
    def run_sync(payload: Num, ctx: JobContext) -> str:
        current = trace.get_current_span().get_span_context()
        with tracer.start_as_current_span("sync work"):
            pass
        return f"{current.span_id:016x}@{threading.current_thread().name}"

    @worker.handles(nested)
    async def run_nested(payload: Num, ctx: JobContext) -> str:
        with tracer.start_as_current_span("inner work"):
            await asyncio.sleep(0)
        return f"{trace.get_current_span().get_span_context().span_id:016x}"

    @worker.handles(slow)
    async def run_slow(payload: Num, ctx: JobContext) -> None:
        await asyncio.sleep(30)

    @worker.handles(napping)
    async def run_snooze(payload: Num, ctx: JobContext) -> int:
        if payload.n not in snoozed:
            snoozed.add(payload.n)
            raise Snooze(0.01)
        return payload.n

    @worker.handles(asked)
    async def run_retry(payload: Num, ctx: JobContext) -> None:
        raise Retry("upstream said later")

    @worker.handles(limited)
    async def run_limited(payload: Num, ctx: JobContext) -> int:
        if payload.n not in snoozed:
            snoozed.add(payload.n)
            raise RateLimited(0.01)
        return payload.n

    return worker


async def drain(queue: Queue, job_ids: list[str], **config: object) -> None:
    worker = serve(queue, **config)
    task = asyncio.create_task(worker.run())
    try:
        for job_id in job_ids:
            await wait_state(queue, job_id, JobState.COMPLETED, JobState.FAILED)
    finally:
        worker.stop(grace=0)
        await task


def process_spans(spans: Spans, job_id: str) -> list[ReadableSpan]:
    found = [
        s
        for s in spans.all()
        if s.kind is SpanKind.CONSUMER
        and (s.attributes or {}).get("messaging.message.id") == job_id
    ]
    return sorted(found, key=lambda s: (s.attributes or {})["conveyor.job.attempt"])  # type: ignore[arg-type,return-value]


async def test_send_and_process_spans_follow_the_messaging_conventions(
    spans: Spans, queue: Queue
) -> None:
    with tracer.start_as_current_span("request") as request:
        handle = await queue.enqueue(echo, Num(n=7))
    send = spans.one("send mail")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "conveyor",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": handle.id,
        "conveyor.job.name": "trace.echo",
    }
    info = await queue.get(handle.id)
    assert info is not None and info.headers["traceparent"].startswith(traceparent_of(send))

    await drain(queue, [handle.id])
    [process] = process_spans(spans, handle.id)
    assert process.name == "process mail"
    assert process.kind is SpanKind.CONSUMER
    attributes = dict(process.attributes or {})
    worker_id = attributes.pop("messaging.client.id")
    assert isinstance(worker_id, str) and worker_id
    assert attributes == {
        "messaging.system": "conveyor",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "mail",
        "messaging.message.id": handle.id,
        "conveyor.job.name": "trace.echo",
        "conveyor.job.attempt": 1,
        "conveyor.job.max_attempts": 3,
        "conveyor.job.outcome": "returned",
    }
    send_ctx = send.get_span_context()
    assert send_ctx is not None
    # Linked to the producer's span, and its child: one trace from request to handler.
    assert linked(process) == [ids(send_ctx)]
    assert ids(process.parent) == ids(send_ctx)
    assert process.context is not None and process.context.trace_id == send_ctx.trace_id
    assert process.status.status_code is StatusCode.UNSET


async def test_each_attempt_is_a_span_linked_to_the_one_producer_span(
    spans: Spans, queue: Queue
) -> None:
    handle = await queue.enqueue(flaky, Num(n=1))
    await drain(queue, [handle.id])
    send_ctx = spans.one("send mail").get_span_context()
    attempts = process_spans(spans, handle.id)
    assert [(s.attributes or {})["conveyor.job.attempt"] for s in attempts] == [1, 2, 3]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    for span in attempts:
        assert linked(span) == [ids(send_ctx)]
    first = attempts[0]
    assert (first.attributes or {})["error.type"] == "ValueError"
    assert (first.attributes or {})["conveyor.job.outcome"] == "error"
    assert first.status.description == "ValueError: attempt 1 fails"
    [event] = first.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.message"] == "attempt 1 fails"


async def test_a_batch_is_one_send_span_whose_context_every_job_carries(
    spans: Spans, queue: Queue
) -> None:
    handles = await queue.enqueue_many([echo.request(Num(n=n)) for n in range(3)])
    send = spans.one("send mail")
    assert (send.attributes or {})["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in (send.attributes or {})
    for handle in handles:
        info = await queue.get(handle.id)
        assert info is not None and info.headers["traceparent"].startswith(traceparent_of(send))
    await drain(queue, [h.id for h in handles])
    for handle in handles:
        [process] = process_spans(spans, handle.id)
        assert linked(process) == [ids(send.get_span_context())]

    # A batch over several queues names no destination.
    await queue.enqueue_many([echo.request(Num(n=1)), other.request(Num(n=2))])
    mixed = spans.one("send")
    assert "messaging.destination.name" not in (mixed.attributes or {})
    assert (mixed.attributes or {})["messaging.batch.message_count"] == 2


async def test_handler_spans_are_children_of_the_process_span(spans: Spans, queue: Queue) -> None:
    async_job = await queue.enqueue(nested, Num(n=1))
    sync_job = await queue.enqueue(sync_echo, Num(n=2))
    await drain(queue, [async_job.id, sync_job.id])

    [process] = process_spans(spans, async_job.id)
    inner = spans.one("inner work")
    assert inner.parent == process.get_span_context()
    assert await async_job.result() == f"{process.get_span_context().span_id:016x}"  # type: ignore[union-attr]

    # A sync handler runs on its own thread, in a copy of the context: the span is current.
    [sync_process] = process_spans(spans, sync_job.id)
    sync_ctx = sync_process.get_span_context()
    assert sync_ctx is not None
    shown = await sync_job.result()
    assert shown == f"{sync_ctx.span_id:016x}@conveyor-sync-handler"
    assert spans.one("sync work").parent == sync_ctx


async def test_outcomes_that_are_not_errors_and_timeouts_that_are(
    spans: Spans, queue: Queue
) -> None:
    snoozing = await queue.enqueue(napping, Num(n=1))
    throttled = await queue.enqueue(limited, Num(n=2))
    timing_out = await queue.enqueue(slow, Num(n=3))
    retrying = await queue.enqueue(asked, Num(n=4))
    await drain(queue, [snoozing.id, throttled.id, timing_out.id, retrying.id])

    def outcomes(job_id: str) -> list[tuple[object, StatusCode]]:
        return [
            ((s.attributes or {})["conveyor.job.outcome"], s.status.status_code)
            for s in process_spans(spans, job_id)
        ]

    assert outcomes(snoozing.id) == [("snooze", StatusCode.UNSET), ("returned", StatusCode.UNSET)]
    assert outcomes(throttled.id)[0] == ("rate_limited", StatusCode.UNSET)
    assert outcomes(throttled.id)[-1] == ("returned", StatusCode.UNSET)
    assert outcomes(timing_out.id) == [("timeout", StatusCode.ERROR)]
    [timeout_span] = process_spans(spans, timing_out.id)
    assert (timeout_span.attributes or {})["error.type"] == "timeout"
    # Retry asks for another attempt, and this one counts: it failed.
    [retry_span] = process_spans(spans, retrying.id)
    assert (retry_span.attributes or {})["error.type"] == "conveyor.Retry"
    assert retry_span.status.status_code is StatusCode.ERROR


async def test_jobs_enqueued_by_name_and_from_sync_code(spans: Spans, queue: Queue) -> None:
    # The queue of a job enqueued by name is routed after the span starts: the name follows.
    by_name = await queue.enqueue_by_name("trace.echo", {"n": 1}, queue="mail")
    assert (spans.one("send mail").attributes or {})["messaging.message.id"] == by_name.id
    routed = await queue.enqueue_by_name("trace.nobody", {"n": 1})
    assert (spans.one("send default").attributes or {})["messaging.message.id"] == routed.id

    # A SyncQueue enqueues on its own thread, in the caller's context.
    sync_queue = SyncQueue(queue)
    try:
        with tracer.start_as_current_span("view") as view:
            sync_handle = sync_queue.enqueue(echo, Num(n=5))
    finally:
        sync_queue.close()
    [send] = [
        s
        for s in spans.named("send mail")
        if (s.attributes or {})["messaging.message.id"] == sync_handle.id
    ]
    assert send.parent is not None and send.parent.span_id == view.get_span_context().span_id


async def test_a_failed_enqueue_is_an_error_of_its_span(spans: Spans, queue: Queue) -> None:
    from conveyor import InvalidArgument

    with pytest.raises(InvalidArgument):
        await queue.enqueue(echo, Num(n=1), job_id="\x00bad")
    send = spans.one("send mail")
    assert send.status.status_code is StatusCode.ERROR
    assert (send.attributes or {})["error.type"] == "conveyor.InvalidArgument"


async def test_tracing_can_be_turned_off(
    spans: Spans, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = Queue(queue.driver, tracing=False)
    assert not quiet.traced
    with tracer.start_as_current_span("request"):
        handle = await quiet.enqueue(echo, Num(n=1))
    assert spans.named("send mail") == []
    info = await queue.get(handle.id)
    assert info is not None and "traceparent" not in info.headers
    await drain(queue, [handle.id], tracing=False)
    assert process_spans(spans, handle.id) == []

    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "redis, conveyor")
    assert not Queue(queue.driver).traced
    assert Queue(queue.driver, tracing=True).traced


async def test_a_job_enqueued_without_a_trace_gets_a_root_span(spans: Spans, queue: Queue) -> None:
    handle = await Queue(queue.driver, tracing=False).enqueue(echo, Num(n=1))
    await drain(queue, [handle.id])
    [process] = process_spans(spans, handle.id)
    assert process.parent is None and list(process.links) == []


async def test_an_oversized_trace_context_is_cut_to_its_traceparent(
    spans: Spans, queue: Queue
) -> None:
    from opentelemetry import baggage, context

    token = context.attach(baggage.set_baggage("big", "x" * 4000))
    try:
        with tracer.start_as_current_span("request"):
            handle = await queue.enqueue(echo, Num(n=1))
    finally:
        context.detach(token)
    info = await queue.get(handle.id)
    assert info is not None and set(info.headers) == {"traceparent"}

    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        small = await queue.enqueue(echo, Num(n=2))
    finally:
        context.detach(token)
    info = await queue.get(small.id)
    assert info is not None and info.headers["baggage"] == "tenant=acme"
    assert decode_headers(None) == {}


async def test_worker_run_inside_a_span_links_that_span_too(spans: Spans, queue: Queue) -> None:
    with tracer.start_as_current_span("request"):
        handle = await queue.enqueue(echo, Num(n=1))
    send_ctx = spans.one("send mail").get_span_context()
    with tracer.start_as_current_span("ambient") as ambient:
        await drain(queue, [handle.id])
    [process] = process_spans(spans, handle.id)
    assert ids(process.parent) == ids(send_ctx)
    assert linked(process) == [ids(send_ctx), ids(ambient.get_span_context())]


async def test_link_only_middleware(spans: Spans, queue: Queue) -> None:
    from conveyor import tracing

    with tracer.start_as_current_span("request"):
        handle = await queue.enqueue(echo, Num(n=1))
    send_ctx = spans.one("send mail").get_span_context()
    assert send_ctx is not None
    worker = serve(queue, tracing=False)
    worker.use(tracing.middleware(parent=False))
    task = asyncio.create_task(worker.run())
    try:
        await wait_state(queue, handle.id, JobState.COMPLETED)
    finally:
        worker.stop(grace=0)
        await task
    [process] = process_spans(spans, handle.id)
    assert process.parent is None
    assert linked(process) == [ids(send_ctx)]
    assert process.context is not None and process.context.trace_id != send_ctx.trace_id
    await wait_for(lambda: True)


async def test_a_broken_propagator_never_fails_an_enqueue_or_a_job(
    spans: Spans, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry import propagate
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Broken(TextMapPropagator):
        def inject(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("inject broke")

        def extract(self, *args: object, **kwargs: object) -> Any:
            raise RuntimeError("extract broke")

        @property
        def fields(self) -> set[str]:
            return set()

    with tracer.start_as_current_span("request"):
        traced = await queue.enqueue(echo, Num(n=1))  # carries a context, read back below
    working = propagate.get_global_textmap()
    propagate.set_global_textmap(Broken())
    try:
        with tracer.start_as_current_span("request"):
            handle = await queue.enqueue(echo, Num(n=2))
        info = await queue.get(handle.id)
        assert info is not None and "traceparent" not in info.headers
        await drain(queue, [traced.id, handle.id])
    finally:
        propagate.set_global_textmap(working)
    assert await traced.result() == 1 and await handle.result() == 2
    assert "tracing failed starting an enqueue's span" in caplog.text
    assert "tracing failed starting an attempt's span" in caplog.text
