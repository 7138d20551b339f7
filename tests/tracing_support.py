"""Traces recorded in memory for the tests: the ``spans`` fixture and span matchers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from operations import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "operations"}))
    tracing.install(provider, SimpleSpanProcessor(exporter))
    yield exporter
    tracing.install(None)
    provider.shutdown()


def finished(
    exporter: InMemorySpanExporter, match: Callable[[ReadableSpan], bool]
) -> Callable[[], Awaitable[list[ReadableSpan]]]:
    """The finished spans ``match`` picks, for :func:`eventually`."""

    async def check() -> list[ReadableSpan]:
        return [span for span in exporter.get_finished_spans() if match(span)]

    return check


def named(name: str, operation_id: str, tracking: bool = False) -> Callable[[ReadableSpan], bool]:
    """Spans of that name about that operation; ``tracking``: only the tracking consumer's (the
    sagas' consumer has spans of the same name for the messages it takes too)."""

    def match(span: ReadableSpan) -> bool:
        attributes = span.attributes or {}
        return (
            span.name == name
            and attributes.get(tracing.OPERATION_ID) == operation_id
            and (not tracking or "operations.settlement" in attributes)
        )

    return match
