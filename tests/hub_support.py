"""What the live-push (Socket.IO hub) tests share: the ``clients`` fixture (made available by
``pytest_plugins`` in conftest.py) that makes real Socket.IO clients and closes them after the
test, a check that pushed versions only rise, and the helpers that step operations through their
versions and check that a reconnecting client goes live after its sync."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from operations.store.changes import is_ahead, parse_cursor
from tests.live import LiveClient
from tests.support import Publisher, RunningService

Token = Callable[..., str]


@contextlib.asynccontextmanager
async def live_clients(url: str) -> AsyncIterator[Callable[..., LiveClient]]:
    """Makes clients of the service at ``url`` (or of the ``url`` given to one), all closed
    after."""
    made: list[LiveClient] = []

    def make(other: str | None = None) -> LiveClient:
        made.append(LiveClient(other or url))
        return made[-1]

    try:
        yield make
    finally:
        await asyncio.gather(*(client.close() for client in made), return_exceptions=True)


@pytest.fixture
async def clients(service: RunningService) -> AsyncIterator[Callable[..., LiveClient]]:
    """Makes clients of the service (or of ``url``), closed after the test."""
    async with live_clients(service.url) as make:
        yield make


def assert_monotonic(records: list[dict[str, Any]]) -> None:
    """Per operation: versions only rise, and nothing arrives after a terminal state."""
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        before = last.get(record["id"])
        if before is not None:
            assert record["version"] > before["version"], (before, record)
            assert before["state"] == "pending", (before, record)
        last[record["id"]] = record


# Each step gives an operation its next version: three pending steps with new names, then done.
STEPS = ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", "order_approved"]


async def publish_version(publisher: Publisher, ops: list[str], user: str, version: int) -> None:
    step = STEPS[version - 1]
    for op in ops:
        await publisher.publish(step, op, user=user, name=step)


def versions(client: LiveClient, ops: list[str]) -> dict[str, list[int]]:
    return {op: [r["version"] for r in client.records(op)] for op in ops}


def reached(client: LiveClient, ops: list[str], version: int) -> Callable[[LiveClient], bool]:
    return lambda c: all(version in v for v in versions(c, ops).values())


def assert_goes_live_after(client: LiveClient, sync: dict[str, Any]) -> None:
    """Every live event came after the sync, from a later position of the feed."""
    assert client.received[0] == ("operations_sync", sync)
    synced = parse_cursor(sync["cursor"], sync["cursor"].count(",") + 1)
    assert synced is not None
    for event, record in client.received[1:]:
        assert event != "operations_sync", "a second sync"
        position = parse_cursor(record["cursor"], len(synced))
        assert position is not None and is_ahead(position, synced), (record, sync)
        assert not is_ahead(synced, position), (record, sync)


async def engineio_client(url: str, token: str) -> ClientConnection:
    """A WebSocket that offers permessage-deflate, as browsers and socket.io-client do (python-
    socketio's client does not), connected to the hub with a token."""
    socket = await connect(url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket")
    opening = await socket.recv()
    assert isinstance(opening, str) and opening.startswith("0{")
    await socket.send("40" + orjson.dumps({"token": token}).decode())
    admitted = await socket.recv()
    assert isinstance(admitted, str) and admitted.startswith("40{"), admitted
    return socket
