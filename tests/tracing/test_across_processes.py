"""The producer's span reaches a real ``conveyor worker`` process through the store: the test
process enqueues inside a span (SDK, in memory), the worker (SDK, spans written to a file)
runs the jobs, and the two sides' spans are compared."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from conveyor import JobState
from tests.conftest import redis_test_url
from tests.process.harness import Harness, wait_for
from tests.tracing.app.jobs import ENV, Num, echo, flaky
from tests.tracing.conftest import Spans

pytestmark = pytest.mark.process

tracer = trace.get_tracer("tests.tracing")


@pytest.fixture(params=["sqlite", "redis"])
def harness(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "redis":
        url = redis_test_url(request.getfixturevalue("redis_base_url"))
    else:
        url = f"sqlite:///{tmp_path / 'queue.db'}"
    h = Harness(tmp_path, url)
    h.env[ENV] = str(tmp_path / "spans.jsonl")
    try:
        yield h
    finally:
        h.kill_all()
        h.queue.close()


def worker_spans(h: Harness) -> list[dict[str, Any]]:
    path = Path(h.env[ENV])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def hexed(span: Any) -> dict[str, str]:
    ctx = span.get_span_context()
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def test_the_trace_context_survives_enqueue_to_handler(spans: Spans, harness: Harness) -> None:
    h = harness
    with tracer.start_as_current_span("request"):
        ok = h.queue.enqueue(echo, Num(n=4))
        failing = h.queue.enqueue(flaky, Num(n=1))
    sent = {(s.attributes or {})["messaging.message.id"]: s for s in spans.named("send traced")}
    assert set(sent) == {ok.id, failing.id}
    assert all(s.kind is SpanKind.PRODUCER for s in sent.values())

    h.start_worker(target="tests.tracing.app.worker:worker")
    for handle in (ok, failing):
        wait_for(
            lambda handle=handle: h.job(handle.id).state is JobState.COMPLETED,
            timeout=30,
            what=f"{handle.id} to complete",
        )

    def processed() -> list[dict[str, Any]]:
        found = [s for s in worker_spans(h) if s["name"] == "process traced"]
        return found if len(found) == 4 else []

    by_job: dict[str, list[dict[str, Any]]] = {}
    for span in wait_for(processed, timeout=15, what="four process spans in the file"):
        by_job.setdefault(span["attributes"]["messaging.message.id"], []).append(span)

    [process] = by_job[ok.id]
    producer = hexed(sent[ok.id])
    assert process["kind"] == "CONSUMER"
    assert process["links"] == [producer]
    assert process["parent"] == producer
    assert process["trace_id"] == producer["trace_id"]
    attributes = process["attributes"]
    assert attributes["messaging.system"] == "conveyor"
    assert attributes["messaging.operation.name"] == "process"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "traced"
    assert attributes["conveyor.job.name"] == "traced.echo"
    assert attributes["conveyor.job.attempt"] == 1
    assert process["status"] == "UNSET"
    [work] = [s for s in worker_spans(h) if s["name"] == "handler work"]
    assert work["parent"] == {"trace_id": process["trace_id"], "span_id": process["span_id"]}

    # Fails twice, then succeeds: three attempts, each its own span, all linked to one send.
    attempts = sorted(by_job[failing.id], key=lambda s: s["attributes"]["conveyor.job.attempt"])
    producer = hexed(sent[failing.id])
    assert [s["attributes"]["conveyor.job.attempt"] for s in attempts] == [1, 2, 3]
    assert [s["status"] for s in attempts] == ["ERROR", "ERROR", "UNSET"]
    assert [s["attributes"].get("error.type") for s in attempts] == [
        "RuntimeError",
        "RuntimeError",
        None,
    ]
    assert all(s["links"] == [producer] for s in attempts)
    assert all(s["trace_id"] == producer["trace_id"] for s in attempts)
    assert attempts[0]["events"] == ["exception"]
    # The sync handler's own spans are children of their attempt's span.
    works = [s for s in worker_spans(h) if s["name"] == "flaky work"]
    assert sorted(w["parent"]["span_id"] for w in works) == sorted(s["span_id"] for s in attempts)
