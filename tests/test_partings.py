"""A closed WebSocket connection leaves nothing that only the cycle collector frees
(hub/partings.py): through a running service, with the collector off, connections that come
and go leave (almost) nothing for it, and each one's outlet, uvicorn and websockets connections
and transport are gone as soon as it has closed. The environ the hub's engine.io server builds is
engine.io's own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import sys
import weakref
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from engineio.async_drivers import asgi as engineio_asgi

from hub import partings
from hub.partings import RequestBody, WebSocket, translate_request
from tests.hub_support import Token, engineio_client
from tests.support import RunningService, eventually, run_to_end, uid

ROOT = Path(__file__).resolve().parent.parent

# Measured with the collector off: a full collection freed 129 objects a closed connection
# before (hub/partings.py), 169 for one opened as a long-poll, none after; each cycle alone left
# at least 7 (1,420 for 200 connections). The bound, one a connection, leaves room for what the
# rest of this process leaves meanwhile (asyncio's subprocess transport for the clients' process:
# about 40).
CYCLES = 200
MOST_FOR_THE_COLLECTOR = CYCLES


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def left_for_the_collector() -> tuple[int, str]:
    """What a full collection frees now, counted, and its commonest types. Counted as the
    tracked objects it frees, not as what ``gc.collect()`` returns: that leaves out the objects
    of a cycle a finalizer breaks (a suspended generator's, closed by the collector)."""
    before = collections.Counter(type(thing).__qualname__ for thing in gc.get_objects())
    gc.collect()
    before.subtract(type(thing).__qualname__ for thing in gc.get_objects())
    freed = sum(count for count in before.values() if count > 0)
    return freed, ", ".join(f"{name} {count}" for name, count in before.most_common(12))


async def all_closed(service: RunningService) -> bool:
    """Every connection gone from the hub, engine.io and uvicorn, and its request finished."""
    state = service.server.server_state
    hub = service.service.hub
    return (
        hub.connected == 0
        and not hub.server.eio.sockets
        and not state.connections
        and not state.tasks
    )


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connections_that_come_and_go_leave_nothing_for_the_cycle_collector(
    service: RunningService, token: Token, transport: str
) -> None:
    """On a WebSocket from the start, or a long-poll first and then upgraded."""
    tokens = [token(uid()) for _ in range(20)]
    churn = (sys.executable, "-m", "tests.churn_clients", service.url, str(CYCLES), "20")
    with collector_off():
        status, out, err = await run_to_end(*churn, transport, *tokens, cwd=ROOT)
        assert status == 0, err
        assert out.split() == [str(CYCLES)]
        await eventually(lambda: all_closed(service), "every connection closed")
        freed, kinds = left_for_the_collector()
    assert freed < MOST_FOR_THE_COLLECTOR, f"{freed} objects in cycles: {kinds}"


async def test_a_closed_connection_is_freed_at_once(service: RunningService, token: Token) -> None:
    hub = service.service.hub
    with collector_off():
        client = await engineio_client(service.url, token(uid()))
        (eio_sid,) = hub.server.eio.sockets
        outlet = hub._outlets.get(eio_sid)
        assert outlet is not None
        # Not the engine.io socket: engine.io's service task keeps the one it looked at last
        # until its next pass (a reference, not a cycle); the count above covers it.
        protocol = outlet.protocol
        owned = [outlet, outlet.ws, protocol, protocol.conn, protocol.transport]
        alive = [weakref.ref(thing) for thing in owned]
        del outlet, protocol, owned
        await client.close()
        await eventually(lambda: all_closed(service), "the connection closed")

        async def freed() -> bool:
            return all(ref() is None for ref in alive)

        await eventually(freed, "the connection's objects freed", timeout=5)


def scope(kind: str, **more: Any) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"text/plain;charset=UTF-8"),
        (b"content-length", b"11"),
        (b"x-forwarded-proto", b"https"),
        (b"accept", b"text/html"),
        (b"accept", b"*/*"),
        (b"x-odd", b"\xff\xfe"),
        (b"user-agent", "caf\u00e9".encode()),
    ]
    return {
        "type": kind,
        "path": "/socket.io/",
        "query_string": b"EIO=4&transport=polling&t=abc",
        "method": "POST",
        "headers": headers,
        **more,
    }


EVENTS = {
    "one body": [{"type": "http.request", "body": b'40{"a":1}', "more_body": False}],
    "a body in three parts": [
        {"type": "http.request", "body": b"40", "more_body": True},
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ],
    "no body": [{"type": "http.request"}],
    "a WebSocket": [{"type": "websocket.connect"}],
    "a disconnect": [{"type": "http.disconnect"}],
}


def receiver(events: list[dict[str, Any]]) -> Any:
    pending = list(events)

    async def receive() -> MutableMapping[str, Any]:
        return pending.pop(0)

    return receive


async def reads(body: Any, lengths: list[int | None]) -> list[Any]:
    return [await body.read(length) for length in lengths]


@pytest.mark.parametrize("events", list(EVENTS.values()), ids=list(EVENTS))
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"query_string": b""},
        {"query_string": b"\xff"},
        {"method": "GET", "type": "websocket"},
        {"headers": []},
    ],
    ids=["full", "no query", "undecodable query", "websocket", "no headers"],
)
@pytest.mark.parametrize("lengths", [[None, None], [3, 100, None], [2, 2, 2, 2, 2, 2]])
async def test_the_environ_is_engineios_own(
    events: list[dict[str, Any]], variant: dict[str, Any], lengths: list[int | None]
) -> None:
    """engine.io's ASGI driver and the hub's build the same environ, and their bodies read
    the same, read whole or in pieces."""
    of_request = scope("http", **variant)
    send = object()
    their_receive, our_receive = receiver(events), receiver(events)
    theirs = await engineio_asgi.translate_request(of_request, their_receive, send)
    ours = await translate_request(of_request, our_receive, send)  # type: ignore[arg-type]
    assert set(ours) == set(theirs)
    if not theirs:
        return
    assert theirs.pop("asgi.receive") is their_receive
    assert ours.pop("asgi.receive") is our_receive
    their_body, our_body = theirs.pop("wsgi.input"), ours.pop("wsgi.input")
    assert isinstance(our_body, RequestBody)
    assert ours == theirs
    if events[0]["type"] == "http.request":
        assert await reads(our_body, lengths) == await reads(their_body, lengths)


def test_the_hubs_engineio_server_builds_its_environs_with_the_hubs_translate_request(
    service: RunningService,
) -> None:
    eio = service.service.hub.server.eio
    assert eio._async["translate_request"] is translate_request
    assert eio._async["websocket"] is WebSocket
    assert issubclass(WebSocket, engineio_asgi.WebSocket)
    # engine.io's own table of driver functions, which every server shares, is untouched.
    assert engineio_asgi._async["translate_request"] is engineio_asgi.translate_request
    assert engineio_asgi._async["websocket"] is engineio_asgi.WebSocket
    ours = {**eio._async, "translate_request": None, "websocket": None}
    assert ours == {**engineio_asgi._async, "translate_request": None, "websocket": None}


async def test_closing_a_long_poll_whose_client_never_polls_again_does_not_hang(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine.io's disconnect waits until a long-poll client takes the close packet; this one
    opened a session and never polls again. The hub's close gives up waiting, the socket
    closed."""
    monkeypatch.setattr(partings, "CLOSE_WAIT_SECONDS", 0.5)
    async with httpx.AsyncClient(timeout=10) as http:
        opened = await http.get(
            f"{service.url}/socket.io/", params={"EIO": "4", "transport": "polling"}
        )
        assert opened.status_code == 200 and opened.text.startswith("0{")
    sid = orjson.loads(opened.text[1:])["sid"]
    engineio_server = service.service.hub.server.eio
    socket = engineio_server.sockets[sid]
    await asyncio.wait_for(partings.disconnect(engineio_server, sid), timeout=5)
    assert socket.closed
    with pytest.raises(TimeoutError):  # engine.io's own, unbounded, is still waiting
        await asyncio.wait_for(socket.queue.join(), timeout=0.5)
