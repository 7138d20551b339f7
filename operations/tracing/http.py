"""HTTP requests as server spans: a small ASGI middleware (see :mod:`operations.tracing`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from operations import tracing

# Probes and scrapes would only bury the requests worth seeing.
UNTRACED_PATHS = ("/health", "/ready", "/metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


CONTINUE = "continue"
LINK = "link"
PARENTS = (CONTINUE, LINK)


class TracingMiddleware:
    """Each HTTP request a server span, named by the route's path template once the router has
    matched it. A well-formed ``traceparent`` of the caller's is continued (``parent=continue``,
    the default) or, with ``parent=link``, only linked from a new trace, so that a client cannot
    choose the trace id the service's own messages carry."""

    def __init__(self, app: App, parent: str = CONTINUE) -> None:
        self.app = app
        self.link_only = parent == LINK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not tracing.active() or scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in (b"traceparent", b"tracestate")
        }
        caller = tracing.extract(headers, "http")
        method = scope["method"]
        links = None
        if caller is not None and self.link_only:
            links = [Link(trace.get_current_span(caller).get_span_context())]
            caller = None
        span = tracing.tracer().start_span(
            method,
            context=caller,
            links=links,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        )

        async def traced_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        with trace.use_span(
            span, end_on_exit=True, record_exception=True, set_status_on_exception=True
        ):
            try:
                await self.app(scope, receive, traced_send)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")
