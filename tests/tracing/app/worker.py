"""A worker app that traces with an OpenTelemetry SDK and writes every finished span as a line
of JSON to the file ``$CONVEYOR_TEST_SPANS`` names; run with
``conveyor --url ... worker tests.tracing.app.worker:worker``."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from conveyor import JobContext, Queue, Worker, WorkerConfig
from tests.tracing.app.jobs import ENV, Num, echo, flaky


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file, one JSON object a line, as it ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(as_json(span)) + "\n" for span in spans]
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.writelines(lines)
            out.flush()
        return SpanExportResult.SUCCESS


def as_json(span: ReadableSpan) -> dict[str, object]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent": None
        if span.parent is None
        else {"trace_id": f"{span.parent.trace_id:032x}", "span_id": f"{span.parent.span_id:016x}"},
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
    }


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ[ENV])))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("tests.tracing.app")


worker = Worker(
    Queue.from_url(),
    config=WorkerConfig(poll_interval=0.05, heartbeat_interval=0.5, maintenance_interval=0.2),
    jobs=[echo, flaky],
)


@worker.handles(echo)
async def run_echo(payload: Num, ctx: JobContext) -> int:
    with tracer.start_as_current_span("handler work"):
        return payload.n


@worker.handles(flaky)
def run_flaky(payload: Num, ctx: JobContext) -> int:
    # A sync handler: its spans are children of the attempt's span too.
    with tracer.start_as_current_span("flaky work"):
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")
        return ctx.attempt
