"""Saga messages keep their trace: what a step queues goes out with the step's ``traceparent``
(kept in the outbox, so a later send still carries it), and a deadline's compensations continue
the trace that started the saga. Against the memory and the Redis saga store."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from operations import tracing
from tests.sagas_support import Harness, start_trip, step_trip
from tests.support import new_id

pytestmark = pytest.mark.usefixtures("journal")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    tracing.install(provider, SimpleSpanProcessor(exporter))
    yield exporter
    tracing.install(None)
    provider.shutdown()


def trace_of(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


async def test_steps_and_a_deadlines_compensations_carry_the_sagas_trace(
    h: Harness, spans: InMemorySpanExporter
) -> None:
    trip, t0 = new_id(), time.time()
    with tracing.tracer().start_as_current_span("process trip_requested") as started:
        await start_trip(h, trip, deadlineIn=60, now=t0)
    started_count = len(h.publisher.published)
    with tracing.tracer().start_as_current_span("process flight_booked") as stepped:
        await step_trip(h, trip, "flight_booked")
    steps = list(h.publisher.published)
    assert 0 < started_count < len(steps)
    trace = started.get_span_context().trace_id
    for message in steps[:started_count]:
        assert trace_of((message.trace_context or {})["traceparent"]) == trace
    for message in steps[started_count:]:
        assert trace_of((message.trace_context or {})["traceparent"]) == (
            stepped.get_span_context().trace_id
        )

    await h.coordinator.expire("trip", trip, now=t0 + 61)  # outside any span, as the watcher
    compensations = h.publisher.since(len(steps))
    assert compensations == ["cancel_flight", "cancel_trip", "trip_rejected"]
    for message in h.publisher.published[len(steps) :]:
        assert trace_of((message.trace_context or {})["traceparent"]) == trace, message.routing_key
    [deadline] = [span for span in spans.get_finished_spans() if span.name == "saga deadline"]
    assert deadline.context.trace_id == trace
    assert (deadline.attributes or {})["operations.saga_id"] == trip


async def test_without_tracing_nothing_is_kept(h: Harness) -> None:
    trip = new_id()
    await start_trip(h, trip)
    assert h.publisher.published
    assert all(message.trace_context == {} for message in h.publisher.published)
    assert (await h.record("trip", trip)).trace_context == {}
