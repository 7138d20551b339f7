"""The WebSocket server under Socket.IO, as ``operations serve`` runs it: permessage-deflate only
when ``OPERATIONS_WS_COMPRESSION`` asks for it, and no log line per WebSocket unless the level is
DEBUG, while the server's other lines stay."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
import pytest
import socketio
from websockets.asyncio.client import ClientConnection

from operations import logs
from operations.settings import Settings
from tests.hub_support import engineio_client
from tests.support import (
    Publisher,
    RunningService,
    ServeProcess,
    eventually,
    new_id,
    serve_process,
)

DEFLATE = "permessage-deflate"
WEBSOCKET_LINES = ('"WebSocket /socket.io/', "connection open", "connection closed")


def extensions(socket: ClientConnection) -> str:
    assert socket.response is not None
    return socket.response.headers.get("Sec-WebSocket-Extensions", "")


def log_lines(process: ServeProcess) -> list[dict[str, Any]]:
    process.log.seek(0)
    return [json.loads(line) for line in process.log.read().decode().splitlines() if line]


def websocket_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if any(part in line["message"] for part in WEBSOCKET_LINES)]


async def test_by_default_a_client_offering_compression_gets_none_and_no_log_line(
    settings: Settings, redis_client: object, amqp: object, token: Callable[..., str]
) -> None:
    async with serve_process(settings, {"OPERATIONS_LOG_FORMAT": "json"}) as process:
        socket = await engineio_client(process.url, token("alice"))
        try:
            assert DEFLATE not in extensions(socket)
        finally:
            await socket.close()
        lines = log_lines(process)
    # The handshake's lines are written before its answer: had they been logged, they would be here.
    assert websocket_lines(lines) == []
    # The server's own lines at INFO are still there.
    server = [line["message"] for line in lines if line["logger"] == "uvicorn.error"]
    assert any(message.startswith("Uvicorn running on") for message in server), server


async def test_with_compression_on_it_is_negotiated_and_pushes_arrive(
    settings: Settings,
    redis_client: object,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    token: Callable[..., str],
) -> None:
    user, op = "bob", new_id()
    async with serve_process(settings, {"OPERATIONS_WS_COMPRESSION": "true"}) as process:
        socket = await engineio_client(process.url, token(user))
        try:
            assert extensions(socket).startswith(DEFLATE)
            await publisher.publish("create_order", op, user=user, name="create_order")
            async with asyncio.timeout(15):
                packet = await socket.recv()
                while packet == "2":  # engine.io's ping: at most one in 15 s
                    await socket.send("3")
                    packet = await socket.recv()
            assert isinstance(packet, str) and packet.startswith("42"), packet
            event, record = orjson.loads(packet[2:])
        finally:
            await socket.close()
    assert event == "operation_pending"
    assert record["id"] == str(uuid.UUID(op)) and record["state"] == "pending"


async def test_at_debug_each_websocket_is_logged_at_debug(
    settings: Settings, redis_client: object, amqp: object, token: Callable[..., str]
) -> None:
    env = {"OPERATIONS_LOG_FORMAT": "json", "OPERATIONS_LOG_LEVEL": "DEBUG"}
    async with serve_process(settings, env) as process:
        socket = await engineio_client(process.url, token("alice"))
        await socket.close()
        lines = log_lines(process)
    found = websocket_lines(lines)
    assert {line["message"] for line in found} >= {"connection open"}
    assert any(line["message"].endswith('" [accepted]') for line in found)
    assert {line["level"] for line in found} == {"debug"}
    assert all(line["logger"] == "uvicorn.error" for line in found)


def test_the_servers_other_lines_are_kept_as_they_are(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", out, form="json")
    logs.configure("INFO", out, form="json")  # configured twice: still one filter
    server = logging.getLogger("uvicorn.error")
    server.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/socket.io/?EIO=4")
    server.info("connection open")
    server.info('%s - "WebSocket %s" 403', "127.0.0.1:5", "/socket.io/?EIO=4")
    server.info("connection rejected (%d %s)", 403, "Forbidden")
    server.error("Exception in ASGI application")
    server.warning("connection open")  # the same words at another level are not the lifecycle
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("info", '127.0.0.1:5 - "WebSocket /socket.io/?EIO=4" 403'),
        ("info", "connection rejected (403 Forbidden)"),
        ("error", "Exception in ASGI application"),
        ("warning", "connection open"),
    ]
    assert sum(isinstance(f, logs.WebSocketLifecycle) for f in server.filters) == 1


@pytest.mark.parametrize(
    "transports",
    [
        # Its disconnect waits out a long-poll, and the service's stop another: 45 s.
        pytest.param(["polling"], marks=pytest.mark.slow),
        ["polling", "websocket"],
    ],
)
async def test_a_long_polling_client_is_admitted_and_pushed_to(
    service: RunningService,
    publisher: Publisher,
    token: Callable[..., str],
    transports: list[str],
) -> None:
    """Its CONNECT comes in a POST's body, read from that request's own environ: the opening
    request's body reader, which the hub drops, is not needed for it."""
    op = new_id()
    client = socketio.AsyncClient(reconnection=False)
    pushed: list[dict[str, Any]] = []

    async def pending(record: dict[str, Any]) -> None:
        pushed.append(record)

    client.on("operation_pending", pending)
    await client.connect(service.url, auth={"token": token("carol")}, transports=transports)
    try:
        await publisher.publish("create_order", op, user="carol", name="create_order")

        async def arrived() -> bool:
            return bool(pushed)

        await eventually(arrived, "the push over long-polling")
        assert client.transport() == transports[-1]
    finally:
        await client.disconnect()
    assert [record["id"] for record in pushed] == [str(uuid.UUID(op))]
