"""Trace context from outside: malformed or oversized W3C headers are ignored, counted and logged
at most once a minute; an HTTP caller's trace is continued, or only linked with
OPERATIONS_TRACE_HTTP_PARENT=link. Over the real RabbitMQ and Redis."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from operations.auth.identity import normalise_id
from operations.settings import Settings
from operations.tracing import context as tracecontext
from tests.api import bearer
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, eventually, new_id, start_service
from tests.tracing_support import TRACE_ID, TRACEPARENT, finished, named

HUGE = "00-" + "a" * 5_000 + "-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def fresh_refusal_log() -> Iterator[None]:
    tracecontext.reset()
    yield


@pytest.mark.parametrize(
    "traceparent",
    [
        TRACEPARENT,
        f"01-{TRACE_ID}-00f067aa0ba902b7-01-future-field",
    ],
)
def test_a_well_formed_traceparent_passes(traceparent: str) -> None:
    assert tracecontext.checked(traceparent, "vendor=x,other@tenant=y z", "http") == {
        "traceparent": traceparent,
        "tracestate": "vendor=x,other@tenant=y z",
    }


@pytest.mark.parametrize(
    "traceparent",
    [
        HUGE,
        "",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-" + "0" * 16 + "-01",
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",
        f"00-{TRACE_ID}-00f067aa0ba902b7-01\n",
    ],
)
def test_a_malformed_traceparent_is_refused_with_its_tracestate(traceparent: str) -> None:
    counted: list[str] = []
    tracecontext.count_refusals(counted.append)
    try:
        assert tracecontext.checked(traceparent, "vendor=x", "amqp") is None
    finally:
        tracecontext.count_refusals(None)
    assert counted == ["amqp"]


@pytest.mark.parametrize(
    "tracestate",
    ["x" * 600, ",".join(f"k{n}=v" for n in range(33)), "Upper=v", "k=v=w", "k=\x01"],
)
def test_a_bad_tracestate_is_dropped_alone(tracestate: str) -> None:
    assert tracecontext.checked(TRACEPARENT, tracestate, "http") == {"traceparent": TRACEPARENT}


@dataclasses.dataclass
class Traced:
    service: RunningService
    http: httpx.AsyncClient


@pytest.fixture
async def linking(
    spans: InMemorySpanExporter, settings: Settings, redis_client: object, amqp: object
) -> AsyncIterator[Traced]:
    linked = dataclasses.replace(settings, trace_http_parent="link")
    async with (
        start_service(linked) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        yield Traced(running, client)


def _server(span: ReadableSpan) -> bool:
    return span.kind is SpanKind.SERVER


async def test_bad_trace_headers_on_every_request_log_one_line_and_are_counted(
    spans: InMemorySpanExporter,
    service: RunningService,
    http: httpx.AsyncClient,
    token: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = bearer(token("alice"), traceparent=HUGE)
    with caplog.at_level(logging.INFO):
        for _ in range(40):
            assert (await http.get(f"/operations/{new_id()}", headers=headers)).status_code == 404
        bad_state = {**headers, "traceparent": TRACEPARENT, "tracestate": "k=v," * 40}
        assert (await http.get(f"/operations/{new_id()}", headers=bad_state)).status_code == 404

    async def all_requests() -> list[ReadableSpan]:
        found = await finished(spans, _server)()
        return found if len(found) == 41 else []

    requests = sorted(
        await eventually(all_requests, "the request spans"), key=lambda span: span.start_time or 0
    )
    assert all(format(span.context.trace_id, "032x") != TRACE_ID for span in requests[:40])
    assert format(requests[40].context.trace_id, "032x") == TRACE_ID
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["operations.tracing"]
    assert "traceparent header from http" in warnings[0].getMessage()
    metrics = Scrape((await http.get("/metrics")).text)
    assert metrics.value("operations_trace_context_refusals_total", source="http") == 41


async def test_a_message_with_an_oversized_traceparent_starts_a_trace_of_its_own(
    spans: InMemorySpanExporter, service: RunningService, publisher: Publisher
) -> None:
    op = new_id()
    await publisher.publish("create_order", op, user="alice", headers={"traceparent": HUGE})
    [span] = await eventually(
        finished(spans, named("process create_order", normalise_id(op), True)),
        "the consumer span",
    )
    assert span.parent is None
    assert (span.attributes or {})["operations.settlement"] == "ack"
    assert service.service.metrics.trace_context_refusals.value(source="amqp") == 1


async def test_with_link_a_request_starts_its_own_trace_linked_to_the_callers(
    spans: InMemorySpanExporter, linking: Traced, token: Callable[..., str]
) -> None:
    response = await linking.http.get(
        f"/operations/{new_id()}",
        headers=bearer(token("alice"), traceparent=TRACEPARENT),
    )
    assert response.status_code == 404
    [span] = await eventually(finished(spans, _server), "the request's span")
    assert span.parent is None
    assert format(span.context.trace_id, "032x") != TRACE_ID
    [link] = span.links
    assert format(link.context.trace_id, "032x") == TRACE_ID
