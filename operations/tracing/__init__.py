"""Traces with OpenTelemetry, configured the standard way from the ``OTEL_*`` variables.

Nothing is set up unless an exporter has somewhere to send spans: ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER`` (``none`` turns tracing off, as
does ``OTEL_SDK_DISABLED=true``). Until :func:`configure` (or :func:`install`) has run, every
function here is a check of one module global, so the hot path pays nothing when tracing is off.

The W3C ``traceparent`` and ``tracestate`` headers carry a trace through RabbitMQ: :func:`extract`
reads them from a delivered message's headers (str or bytes), :func:`inject` writes the current
trace into the headers of a message about to be published, and :func:`carrier` keeps them for a
message published later (the saga outbox). HTTP requests are traced by
:class:`operations.tracing.http.TracingMiddleware`.

Trace context from outside is checked by :mod:`operations.tracing.context` before OpenTelemetry
reads it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from operations.amqp.settlements import Ack, Settlement
from operations.envelope import Delivered, Envelope, header
from operations.errors import SettingsError
from operations.tracing import context as tracecontext

SERVICE_NAME = "operations"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
HTTP_PROTOBUF = "http/protobuf"
OPERATION_ID = "operations.operation_id"
_HEADERS = ("traceparent", "tracestate")
_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


def active() -> bool:
    """True once spans are recorded and exported."""
    return _tracer is not None


def tracer() -> trace.Tracer:
    assert _tracer is not None, "tracing is not configured"
    return _tracer


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters) or any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure(service_name: str = SERVICE_NAME, environ: Mapping[str, str] | None = None) -> bool:
    """Sets up the SDK when :func:`wanted`: a tracer provider with the ``OTEL_*`` resource,
    sampler and batch settings, and one batch processor per exporter. Returns whether it did.
    ``OTEL_SERVICE_NAME`` wins over ``service_name``. Raises :class:`SettingsError` for an
    exporter or protocol that is not available."""
    environ = os.environ if environ is None else environ
    if not wanted(environ):
        return False
    exporters = _exporters(environ)
    named = {} if environ.get("OTEL_SERVICE_NAME", "").strip() else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(named))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    trace.set_tracer_provider(provider)
    return True


def install(provider: TracerProvider | None, *processors: SpanProcessor) -> None:
    """Records spans with ``provider`` (None: tracing off). Tests install one with an in-memory
    exporter."""
    global _tracer, _provider
    for processor in processors:
        assert provider is not None
        provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer("operations") if provider is not None else None


def shutdown() -> None:
    """Exports what is still buffered and turns tracing off."""
    provider = _provider
    install(None)
    if provider is not None:
        provider.shutdown()


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [
        name.strip().lower()
        for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
        if name.strip() and name.strip().lower() != "none"
    ]
    return [_exporter(name, environ) for name in names]


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "otlp":
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or HTTP_PROTOBUF
        ).strip()
        if protocol == HTTP_PROTOBUF:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        name = {"grpc": "otlp_proto_grpc", "http/json": "otlp_json_http"}.get(protocol, protocol)
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise SettingsError(
            "OTEL_TRACES_EXPORTER",
            f"no span exporter {name!r} is installed (http/protobuf OTLP and console are;"
            " install the package that provides it)",
        )
    exporter = next(iter(found)).load()()
    if not isinstance(exporter, SpanExporter):
        raise SettingsError("OTEL_TRACES_EXPORTER", f"{name!r} is not a span exporter")
    return exporter


# -- trace context in message headers -----------------------------------------------------


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads AMQP headers as pamqp decodes them: text as str, long strings as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = header(carrier, key)
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [str(key) for key in carrier]


_GETTER = _HeaderGetter()


def extract(headers: Mapping[str, Any] | None, source: str = "amqp") -> Context | None:
    """The trace context a message's headers (or an HTTP request's) carry, or None when they
    carry none that is well formed."""
    if not headers:
        return None
    parent = _GETTER.get(headers, "traceparent")
    state = _GETTER.get(headers, "tracestate")
    clean = tracecontext.checked(parent[0] if parent else None, state[0] if state else None, source)
    if clean is None:
        return None
    context = get_global_textmap().extract(clean)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Writes ``traceparent`` (and ``tracestate``) of the current trace, or of ``context``, into
    a message's headers; does nothing while tracing is off. For any code that publishes."""
    if _tracer is not None:
        get_global_textmap().inject(headers, context=context)


def carrier() -> dict[str, str]:
    """The current trace as message headers, to keep with a message published later; empty
    while tracing is off or outside any trace."""
    if _tracer is None:
        return {}
    headers: dict[str, str] = {}
    get_global_textmap().inject(headers)
    return {key: value for key, value in headers.items() if key in _HEADERS}


def trace_id_link(raw: Any) -> list[Link]:
    """A link to the trace a Convey ``message_context.traceId`` names, when it is a valid W3C
    trace id (32 hex digits, not all zero); the span id is unknown, so it is left invalid."""
    if not isinstance(raw, str) or len(raw) != 32:
        return []
    try:
        trace_id = int(raw, 16)
    except ValueError:
        return []
    if trace_id == 0:
        return []
    context = SpanContext(trace_id, 0, is_remote=True)
    return [Link(context, {"operations.link": "message_context.traceId"})]


def messaging_attributes(
    operation: str,
    exchange: str | None,
    routing_key: str | None,
    message_id: str | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """The messaging semantic-convention attributes of a span about one RabbitMQ message."""
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": exchange or "",
        "messaging.rabbitmq.destination.routing_key": routing_key or "",
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if correlation_id:
        attributes["messaging.message.conversation_id"] = correlation_id
    return attributes


def start_consuming(
    headers: Mapping[str, Any] | None,
    exchange: str | None,
    routing_key: str | None,
    message_id: str | None,
    correlation_id: str | None,
    trace_id: Any = None,
) -> Span:
    """A consumer span for one delivered message, started and not made current: the child of the
    trace its headers carry, or a new trace linked to ``trace_id`` (message_context.traceId)."""
    parent = extract(headers)
    return tracer().start_span(
        f"process {routing_key or exchange or 'message'}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=messaging_attributes(
            "process", exchange, routing_key, message_id, correlation_id
        ),
        links=trace_id_link(trace_id) if parent is None else None,
    )


def consumed(delivered: Delivered, envelope: Envelope | None) -> Span:
    """The tracking consumer's span for one message of a batch, with what its envelope says."""
    span = start_consuming(
        delivered.headers,
        delivered.exchange,
        delivered.routing_key,
        delivered.message_id,
        delivered.correlation_id,
        envelope.trace_id if envelope is not None else None,
    )
    if envelope is not None:
        if envelope.operation_id is not None:
            span.set_attribute(OPERATION_ID, envelope.operation_id)
        span.set_attribute("operations.message.kind", envelope.kind.value)
        span.set_attribute("operations.state", envelope.state.value)
    return span


def settled(span: Span, settlement: Settlement) -> None:
    """Ends a consumer span with its message's settlement (an error unless acknowledged)."""
    span.set_attribute("operations.settlement", type(settlement).__name__.lower())
    if not isinstance(settlement, Ack):
        failed(span, settlement.reason)
    span.end()


def failed(span: Span, reason: str) -> None:
    span.set_status(Status(StatusCode.ERROR, reason))


@contextlib.contextmanager
def publishing(
    exchange: str,
    routing_key: str,
    headers: MutableMapping[str, Any],
    message_id: str | None,
    correlation_id: str | None,
    stored: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """A producer span around one publish, the child of the current trace or of the ``stored``
    trace context (an outbox entry's); its context goes into ``headers``. While tracing is off,
    a stored trace context is passed on as it is."""
    if _tracer is None:
        if stored:
            headers.update(stored)
        yield
        return
    parent = extract(stored) if stored else None
    span = _tracer.start_span(
        f"publish {routing_key}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=messaging_attributes(
            "publish", exchange, routing_key, message_id, correlation_id
        ),
    )
    inject(headers, trace.set_span_in_context(span))
    with trace.use_span(
        span, end_on_exit=True, record_exception=True, set_status_on_exception=True
    ):
        yield


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids in hex, for log lines; None outside any recorded trace."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@contextlib.contextmanager
def processing(
    headers: Mapping[str, Any] | None,
    exchange: str | None,
    routing_key: str | None,
    message_id: str | None,
    correlation_id: str | None,
    trace_id: Any = None,
) -> Iterator[Span | None]:
    """:func:`start_consuming`'s span, made current while the message is handled (what is
    published meanwhile belongs to its trace); None while tracing is off."""
    if _tracer is None:
        yield None
        return
    span = start_consuming(headers, exchange, routing_key, message_id, correlation_id, trace_id)
    with trace.use_span(
        span, end_on_exit=True, record_exception=True, set_status_on_exception=True
    ):
        yield span


@contextlib.contextmanager
def continuing(
    name: str, stored: Mapping[str, str] | None, attributes: Mapping[str, Any]
) -> Iterator[None]:
    """A current span for work done later on behalf of a trace kept as headers (a saga's)."""
    if _tracer is None:
        yield
        return
    span = _tracer.start_span(name, context=extract(stored), attributes=dict(attributes))
    with trace.use_span(
        span, end_on_exit=True, record_exception=True, set_status_on_exception=True
    ):
        yield
