"""Fixtures of the tracing tests: an OpenTelemetry SDK in this process, recording in memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)

from conveyor.tracing import _otel

_exporter = InMemorySpanExporter()


class _WhileTesting(Sampler):
    """Samples only during a tracing test: the provider stays set for the rest of the pytest
    process, whose other tests must neither fill the exporter nor pay for recording."""

    active = False

    def __init__(self) -> None:
        self._on = ParentBased(ALWAYS_ON)

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        if not self.active:
            return SamplingResult(Decision.DROP)
        return self._on.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "while a tracing test runs"


_sampler = _WhileTesting()


def _install() -> None:
    """The process's global tracer provider can be set once: the first tracing test sets an
    SDK one; later ones find it there."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(sampler=_sampler)
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
    _sampler.active = True
    try:
        yield Spans(_exporter)
    finally:
        _sampler.active = False
        _exporter.clear()
        # The provider stays set for the rest of the process: make Conveyor look for it again
        # only at the next tracing test, so the tests after this one (which check the exact
        # headers a job carries) see no tracing, as they would in a process without an SDK.
        _otel._configured = False
        _otel._checked_at = float("inf")
