"""Traces, recorded in memory: consumed messages continue the trace their ``traceparent`` names
(or link to their ``message_context.traceId``), HTTP requests continue the caller's, and one
order's saga, across the simulated services, is one trace. Over the real RabbitMQ and Redis."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from operations import tracing
from operations.auth.identity import normalise_id
from operations.deadletters.letters import capture
from operations.deadletters.redrive import publish_redrive
from operations.errors import SettingsError
from operations.pacco.demo import DemoServices
from operations.sagas.records import OutboxEntry
from operations.settings import Settings
from operations.states import State
from tests.api import bearer
from tests.dead_letter_support import copy_headers
from tests.support import Publisher, RunningService, eventually, new_id, run_operations
from tests.tracing_support import PARENT_ID, TRACE_ID, TRACEPARENT, finished, named


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:1"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:1"}, False),
    ],
)
def test_only_an_endpoint_or_an_exporter_turns_tracing_on(
    environ: dict[str, str], wanted: bool
) -> None:
    assert tracing.wanted(environ) is wanted


def test_without_otel_variables_no_sdk_is_set_up() -> None:
    assert tracing.configure(environ={}) is False
    assert not tracing.active()
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {} and tracing.carrier() == {} and tracing.current_ids() is None


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "nonesuch"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_that_is_not_installed_is_a_settings_error(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as raised:
        tracing.configure(environ=environ)
    assert raised.value.variable == "OTEL_TRACES_EXPORTER"
    assert not tracing.active()


async def test_serve_stops_with_exit_code_2_on_an_unknown_exporter(settings: Settings) -> None:
    code, _, stderr = await run_operations(
        "serve",
        env={"OTEL_TRACES_EXPORTER": "nonesuch", "OPERATIONS_AMQP_URL": settings.amqp_url},
    )
    assert code == 2
    assert "OTEL_TRACES_EXPORTER" in stderr and "nonesuch" in stderr


def test_an_outbox_entry_keeps_its_trace_context() -> None:
    entry = OutboxEntry(
        "m1", "orders", "create_order", {}, State.PENDING, "op", {}, {"traceparent": TRACEPARENT}
    )
    assert OutboxEntry.from_json(orjson.loads(orjson.dumps(entry.to_json()))) == entry
    older = entry.to_json()
    del older["traceContext"]  # stored before traces were kept
    assert OutboxEntry.from_json(older).trace_context == {}


async def test_a_message_with_traceparent_is_processed_in_a_child_span(
    spans: InMemorySpanExporter, service: RunningService, publisher: Publisher
) -> None:
    op = new_id()
    message_id = await publisher.publish(
        "create_order", op, user="alice", headers={"traceparent": bytearray(TRACEPARENT.encode())}
    )
    operation_id = normalise_id(op)
    [span] = await eventually(
        finished(spans, named("process create_order", operation_id, True)), "the consumer span"
    )
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is not None and span.parent.is_remote
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.resource.attributes["service.name"] == "operations"
    assert dict(span.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "orders",
        "messaging.rabbitmq.destination.routing_key": "create_order",
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": op,
        tracing.OPERATION_ID: operation_id,
        "operations.message.kind": "command",
        "operations.state": "pending",
        "operations.outcome": "applied",
        "operations.settlement": "ack",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_a_message_without_trace_context_starts_a_trace_linked_to_its_trace_id(
    spans: InMemorySpanExporter, service: RunningService, publisher: Publisher
) -> None:
    op, convey_trace = new_id(), "0af7651916cd43dd8448eb211c80319c"
    context = {"user": {"id": "alice"}, "traceId": convey_trace}
    await publisher.publish("order_created", op, raw_context=orjson.dumps(context).decode())
    unlinked = new_id()
    await publisher.publish("order_created", unlinked, user="alice")  # its traceId is no W3C id
    [span] = await eventually(
        finished(spans, named("process order_created", normalise_id(op), True)),
        "the consumer span",
    )
    assert span.parent is None
    assert format(span.context.trace_id, "032x") != convey_trace
    [link] = span.links
    assert format(link.context.trace_id, "032x") == convey_trace
    [other] = await eventually(
        finished(spans, named("process order_created", normalise_id(unlinked), True)),
        "the other span",
    )
    assert other.parent is None and not other.links


async def test_a_dead_lettered_message_ends_its_span_in_error(
    spans: InMemorySpanExporter, service: RunningService, publisher: Publisher
) -> None:
    message_id = await publisher.publish(
        "create_order", "x" * 250, headers={"traceparent": TRACEPARENT}
    )

    def match(span: ReadableSpan) -> bool:
        return (span.attributes or {}).get("messaging.message.id") == message_id

    [span] = await eventually(finished(spans, match), "the consumer span")
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.status.status_code is StatusCode.ERROR
    assert "correlation_id" in (span.status.description or "")
    assert (span.attributes or {})["operations.settlement"] == "deadletter"


async def test_an_http_request_continues_the_callers_trace(
    spans: InMemorySpanExporter,
    service: RunningService,
    http: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    response = await http.get(
        f"/operations/{new_id()}",
        headers=bearer(token("alice"), traceparent=TRACEPARENT),
    )
    assert response.status_code == 404
    assert (await http.get("/health")).status_code == 200

    def server(span: ReadableSpan) -> bool:
        return span.kind is SpanKind.SERVER

    [span] = await eventually(finished(spans, server), "the request's span")
    assert span.name == "GET /operations/{id}"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert (span.attributes or {})["http.response.status_code"] == 404
    assert (span.attributes or {})["http.route"] == "/operations/{id}"


async def test_an_order_is_one_trace_across_the_simulated_services(
    spans: InMemorySpanExporter,
    settings: Settings,
    service: RunningService,
    http: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    async with DemoServices(settings.amqp_url, latency_ms=0):
        response = await http.post(
            "/orders",
            json={"customerId": new_id(), "parcelIds": [new_id(), new_id()]},
            headers=bearer(token("alice")),
        )
        assert response.status_code == 202
        op: str = response.json()["operationId"]

        async def completed() -> bool:
            record = await service.service.store.get(op)
            return record is not None and record.state is State.COMPLETED

        await eventually(completed, "the order to complete", timeout=30)

        def about(span: ReadableSpan) -> bool:
            attributes = span.attributes or {}
            return attributes.get("messaging.message.conversation_id") == op

        await eventually(
            finished(spans, named("process make_order_completed", op)), "the last step's span"
        )
    [request] = [s for s in spans.get_finished_spans() if s.name == "POST /orders"]
    trace = request.context.trace_id
    messages = [span for span in spans.get_finished_spans() if about(span)]
    assert {span.context.trace_id for span in messages} == {trace}
    published = {span.name for span in messages if span.kind is SpanKind.PRODUCER}
    assert {
        "publish make_order",
        "publish create_order",
        "publish add_parcel_to_order",
        "publish assign_vehicle_to_order",
        "publish reserve_resource",
        "publish make_order_completed",
    } <= published
    simulated = {
        (span.attributes or {}).get("operations.demo.service")
        for span in messages
        if span.kind is SpanKind.CONSUMER
    }
    assert {"orders", "availability"} <= simulated  # the saga itself picks the vehicle
    # Every span but the request's has its parent in the same trace, so the trace is one tree.
    ids = {span.context.span_id for span in spans.get_finished_spans()}
    for span in messages:
        assert span.parent is not None and span.parent.span_id in ids, span.name
    # message_context.traceId names the same trace, for Convey services that log it.
    assert format(trace, "032x") in str(await _saga_context(service, op))


async def _saga_context(service: RunningService, op: str) -> Sequence[object]:
    sagas = service.service.sagas
    assert sagas is not None
    loaded = await sagas.store.load("order_making", op)
    return [] if loaded is None else [loaded.record.message_context]


async def _redriven(amqp: Any, headers: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Redrives a dead letter with ``headers`` to a queue of its own; the redriven message's
    headers, and the routing key it took."""
    routing_key = f"redriven-{new_id()}"
    letter = capture(
        "operations.dead-letter",
        {**copy_headers(routing_key=routing_key), **headers},
        {"content_type": "application/json"},
        b"{}",
        65_536,
        dt.datetime.now(dt.UTC),
    )
    letter.item.exchange = ""  # the default exchange: straight to the queue named by the key
    async with amqp.channel(publisher_confirms=True) as channel:
        queue = await channel.declare_queue(routing_key, exclusive=True)
        await publish_redrive(channel, letter)
        message = await eventually(lambda: queue.get(fail=False), "the redriven message")
        await message.ack()
    return dict(message.headers), routing_key


async def test_a_redrive_continues_the_dead_letters_own_trace(
    spans: InMemorySpanExporter, amqp: Any
) -> None:
    headers, routing_key = await _redriven(amqp, {"traceparent": TRACEPARENT})
    [span] = await eventually(
        finished(spans, lambda span: span.name == f"publish {routing_key}"), "the publish span"
    )
    assert span.kind is SpanKind.PRODUCER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    traceparent = headers["traceparent"]
    text = traceparent.decode() if isinstance(traceparent, bytes) else traceparent
    assert text == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"


async def test_a_redrive_without_trace_context_joins_the_redriving_trace(
    spans: InMemorySpanExporter, amqp: Any
) -> None:
    with tracing.tracer().start_as_current_span("POST /dead-letters/{id}/redrive") as request:
        headers, routing_key = await _redriven(amqp, {})
    [span] = await eventually(
        finished(spans, lambda span: span.name == f"publish {routing_key}"), "the publish span"
    )
    assert span.context.trace_id == request.get_span_context().trace_id
    assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
    assert str(headers["traceparent"]).startswith(
        f"00-{format(span.context.trace_id, '032x')}-"
    ) or bytes(headers["traceparent"]).decode().startswith(
        f"00-{format(span.context.trace_id, '032x')}-"
    )


async def test_a_redrive_keeps_its_trace_context_while_tracing_is_off(amqp: Any) -> None:
    headers, _ = await _redriven(amqp, {"traceparent": TRACEPARENT})
    traceparent = headers["traceparent"]
    assert (traceparent.decode() if isinstance(traceparent, bytes) else traceparent) == TRACEPARENT
