"""Changes written straight to WebSocket connections (hub/outlets.py): the frame is the one the
websockets library writes, every WebSocket client gets each change once and in order, and a
client of the same user that opened with a long-poll gets the same through engine.io's path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from hub.outlets import frame, message_frame
from tests.hub_support import Token, engineio_client
from tests.live import LiveClient
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, eventually, uid


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_a_frame_is_what_the_websockets_library_writes(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert frame(payload) == expected


def test_a_message_frame_carries_the_engineio_message_type() -> None:
    packet = '2["operation_pending",{"id":"é"}]'
    assert message_frame(packet) == frame(("4" + packet).encode())


async def test_each_client_gets_every_change_once_in_order_on_either_path(
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
    http: httpx.AsyncClient,
) -> None:
    user = uid()
    websocket, admin, upgraded = clients(), clients(), clients()
    await websocket.connect({"token": token(user)})
    await admin.connect({"token": token("ops-person", "admin")})
    await upgraded.connect({"token": token(user)}, websocket_only=False)

    operations = [uid() for _ in range(8)]
    for op in operations:  # interleaved, so a batch holds several operations' changes
        await publisher.publish("create_order", op, user=user, name="create_order")
    for op in operations:
        await publisher.publish("order_created", op, user=user, name="create_order")

    for live in (websocket, admin, upgraded):
        for op in operations:
            await live.wait_for_state(op, "completed")
        for op in operations:
            versions = [record["version"] for record in live.records(op)]
            assert versions == [1, 2], (op, versions)

    changes = 2 * len(operations)

    async def counted() -> Scrape | None:
        page = Scrape((await http.get("/metrics")).text)
        return page if page.value("operations_push_packets_total") == 3 * changes else None

    page = await eventually(counted, "every packet counted")
    # The two WebSocket clients' packets were written straight to their connections; the
    # client that opened with a long-poll and then upgraded got its own through engine.io.
    assert page.value("operations_push_packets_written_total") == 2 * changes


ENGINEIO_TASKS = {"_send_ping", "writer", "websocket_wait"}


def task_names() -> list[str]:
    return [task.get_coro().__qualname__ for task in asyncio.all_tasks()]  # type: ignore[union-attr]


def engineio_tasks() -> list[str]:
    """Tasks of engine.io's own per-socket machinery running now."""
    return [name for name in task_names() if name.rsplit(".", 1)[-1] in ENGINEIO_TASKS]


async def test_an_idle_websocket_client_has_no_task_of_its_own_on_the_service(
    service: RunningService, token: Token
) -> None:
    sockets = [await engineio_client(service.url, token(uid())) for _ in range(10)]
    try:
        assert engineio_tasks() == []
        # Each client's request has its task on the service, which reads the client's packets.
        serving = [name for name in task_names() if name.endswith("run_asgi")]
        assert len(serving) == len(sockets), task_names()
    finally:
        for socket in sockets:
            await socket.close()


async def test_pings_are_sent_on_a_timer_and_a_client_that_stops_answering_is_closed(
    service: RunningService, token: Token
) -> None:
    engineio = service.service.hub.server.eio
    engineio.ping_interval, engineio.ping_timeout = 0.3, 0.5
    socket = await engineio_client(service.url, token(uid()))
    async with asyncio.timeout(10):
        for _ in range(3):
            assert await socket.recv() == "2"  # engine.io's ping
            await socket.send("3")
        assert await socket.recv() == "2"
        # No answer: the socket is closed, with engine.io's close packet when it says it.
        with pytest.raises(ConnectionClosed):
            while True:
                assert await socket.recv() in ("1", "2")
    assert engineio_tasks() == []
