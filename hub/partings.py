"""What a closed WebSocket connection leaves behind: nothing that only the cycle collector frees.

``operations serve`` collects cycles seldom (``OPERATIONS_GC_THRESHOLDS``, see
:mod:`operations.garbage`), so whatever a connection leaves in reference cycles stays in memory
for minutes after it closes. Each closed Socket.IO-over-WebSocket connection left about 130
objects that way (one that opened as a long-poll, about 170), in cycles each made by a library;
each is broken here, at the one place that can see both its ends, and a test
(``tests/test_partings.py``) fails when a library changes what this relies on:

- uvicorn's HTTP connection that upgrades to a WebSocket keeps its httptools parser, which holds
  the connection's own callbacks; uvicorn drops the parser when an HTTP connection is lost, but
  an upgraded one is never told. :class:`WebSocketProtocol` drops it when it takes the
  connection over.
- websockets' connection keeps its parser, a generator suspended in one of its own methods,
  after the connection is lost. :class:`WebSocketProtocol` closes it then.
- asyncio's socket transport keeps its read callback, a method of its own, after the connection
  is lost (Python 3.11; later versions break it themselves, python/cpython#100348).
  :class:`WebSocketProtocol` drops it once the transport has stopped reading.
- engine.io's ASGI driver (``translate_request``) makes a class of its own for each request's
  body reader, and a class is a cycle (its ``__mro__`` holds it). :func:`translate_request`
  builds the same environ with one class for every request.
- the hub's :class:`hub.outlets.Outlet` and the engine.io socket it serves hold each other (the
  socket's ``send`` is the outlet's); the outlet lets go once the socket is closed
  (``Outlet.release``).

A connection that opened as a long-poll and upgraded is served by engine.io's own handler,
whose reader task failed with ``OSError`` when the client left: the task keeps the error, whose
traceback holds the handler's frame, which holds the task. Its :class:`WebSocket` returns None
to that reader instead, which engine.io takes as the client gone, as it takes the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from engineio.async_drivers.asgi import WebSocket as EngineIOWebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket connection (websockets' sans-I/O one, uvicorn's default), which lets
    go of the upgraded HTTP connection's parser as it takes over, and of websockets' parser and
    the transport's read callback once the connection is lost."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgraded = transport.get_protocol()  # uvicorn's HTTP connection, until it hands over
        super().connection_made(transport)
        if upgraded is not self and hasattr(upgraded, "parser"):
            # Its request has been parsed; the upgrade writes it to this connection as bytes.
            upgraded.parser = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # No data comes any more: the parser, a generator suspended in a method of websockets'
        # connection (which holds it), is finished.
        self.conn.parser.close()
        transport = self.transport
        # The transport calls this once it has stopped reading for good (close and abort
        # remove its reader first), so the read callback is never called again.
        if getattr(transport, "_read_ready_cb", None) is not None:
            transport._read_ready_cb = None  # type: ignore[attr-defined]


class RequestBody:
    """A request's body, read as engine.io's ASGI driver reads it (``wsgi.input``)."""

    __slots__ = ("event", "payload", "receive")

    def __init__(self, event: MutableMapping[str, Any], receive: Receive) -> None:
        self.event = event
        self.receive = receive
        self.payload: bytes | None = None

    async def read(self, length: int | None = None) -> bytes:
        if self.payload is None and self.event["type"] == "http.request":
            self.payload = self.event.get("body") or b""
            while self.event.get("more_body"):
                self.event = await self.receive()
                if self.event["type"] == "http.request" and (
                    length is None or len(self.payload) < length
                ):
                    self.payload += self.event.get("body") or b""
        payload = self.payload or b""
        if length is None:
            self.payload = b""
            return payload
        self.payload = payload[length:]
        return payload[:length]


async def translate_request(
    scope: MutableMapping[str, Any], receive: Receive, send: Callable[..., Awaitable[None]]
) -> dict[str, Any]:
    """engine.io's ``translate_request`` for ASGI (``engineio.async_drivers.asgi``), the same
    environ with a :class:`RequestBody` as its ``wsgi.input``."""
    event = await receive()
    if event["type"] not in ("http.request", "websocket.connect"):
        return {}
    path = scope["path"]
    query = ""
    if scope.get("query_string"):
        with contextlib.suppress(UnicodeDecodeError):
            query = scope["query_string"].decode("utf-8")
    environ: dict[str, Any] = {
        "wsgi.input": RequestBody(event, receive),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.async": True,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "SERVER_SOFTWARE": "asgi",
        "REQUEST_METHOD": scope.get("method", "GET"),
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": f"{path}?{query}" if query else path,
        "SCRIPT_NAME": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "SERVER_NAME": "asgi",
        "SERVER_PORT": "0",
        "asgi.receive": receive,
        "asgi.send": send,
        "asgi.scope": scope,
    }
    for raw_name, raw_value in scope["headers"]:
        try:
            name = raw_name.upper().decode("utf-8")
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if name in ("CONTENT-TYPE", "CONTENT-LENGTH"):
            environ[name.replace("-", "_")] = value
            continue
        key = "HTTP_" + name.replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    return environ


class WebSocket(EngineIOWebSocket):  # type: ignore[misc]
    """engine.io's ASGI WebSocket, which tells an upgraded socket's reader that the client has
    gone by returning None, as engine.io's reader takes it, rather than raising ``OSError``."""

    async def wait(self) -> Any:
        try:
            return await super().wait()
        except OSError:
            if getattr(getattr(self.handler, "__self__", None), "upgraded", False):
                return None
            raise


def install(engineio_server: Any) -> None:
    """Makes an engine.io ASGI server build its environs with :func:`translate_request` and
    its WebSockets of :class:`WebSocket`. Its table of driver functions is the driver module's
    own, shared by every server: this one gets a copy."""
    drivers = engineio_server._async
    if drivers.get("translate_request") is not translate_request:
        engineio_server._async = {
            **drivers,
            "translate_request": translate_request,
            "websocket": WebSocket,
        }


CLOSE_WAIT_SECONDS = 5.0


async def disconnect(engineio_server: Any, eio_sid: str) -> None:
    """engine.io's ``disconnect``, bounded. It closes the socket, queues the close packet, then
    waits until a long-poll client has taken it; a client that never polls again, or whose poll
    came just after the close and was refused, would hold the caller for ever. The socket is
    closed either way: after :data:`CLOSE_WAIT_SECONDS` the caller goes on."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(engineio_server.disconnect(eio_sid), CLOSE_WAIT_SECONDS)
