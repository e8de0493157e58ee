"""Fixtures of the tracing tests: an OpenTelemetry SDK in this process, recording in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.tracing import _otel

_exporter = InMemorySpanExporter()


def _install() -> None:
    """The process's global tracer provider can be set once: the first tracing test sets an
    SDK one; later ones find it there."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), "another tracer provider was set first"
    _otel._checked_at = float("-inf")  # look the provider up again at the next call
    if not getattr(provider, "_conveyor_tests", False):
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        provider._conveyor_tests = True  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue]


class Spans:
    """The spans finished since the test began."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in self.all()]}"
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    _install()
    _exporter.clear()
    yield Spans(_exporter)
    _exporter.clear()
