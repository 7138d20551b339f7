"""Changes written straight to WebSocket connections (hub/outlets.py): the frame is the one the
websockets library writes, every WebSocket client gets each change once and in order, and a
client of the same user that opened with a long-poll gets the same through engine.io's path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from engineio.packet import Packet as EngineIOPacket
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from hub.outlets import Outlets, WriterQueue, message_frame, text_frame
from tests.hub_support import Token
from tests.live import LiveClient
from tests.scrape import Scrape
from tests.support import Publisher, eventually, uid


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_a_frame_is_what_the_websockets_library_writes(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def test_a_message_frame_carries_the_engineio_message_type() -> None:
    packet = '2["operation_pending",{"id":"é"}]'
    assert message_frame(packet) == text_frame(("4" + packet).encode())


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


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def connection(queued: int = 0, writable: bool = True) -> tuple[Any, Any]:
    """An engine.io socket and uvicorn's connection behind it, as the hub sees them."""
    queue = WriterQueue()
    for _ in range(queued):
        queue.put_nowait("older packet")
    socket = SimpleNamespace(
        upgraded=True, upgrading=False, closing=False, closed=False, queue=queue
    )
    event = asyncio.Event()
    if writable:
        event.set()
    protocol = SimpleNamespace(
        conn=SimpleNamespace(state=State.OPEN, extensions=[]),
        transport=Transport(),
        close_sent=False,
        disconnected=False,
        writable=event,
        handshake_complete=True,
        initial_response=None,
        send=None,
    )
    return socket, protocol


async def test_a_batch_writes_once_per_ready_connection_and_queues_the_rest_in_order() -> None:
    ready, behind, held = connection(), connection(queued=1), connection(writable=False)
    sockets = {"ready": ready[0], "behind": behind[0], "held": held[0]}
    outlets = Outlets(sockets)
    for eio_sid, (_, protocol) in zip(sockets, (ready, behind, held), strict=True):
        protocol.send = SimpleNamespace(__self__=protocol)
        outlets.opened(eio_sid, {"asgi.scope": {"type": "websocket"}, "asgi.send": protocol.send})
    assert len(outlets) == 3

    sent: list[tuple[str, str]] = []

    async def send_packet(eio_sid: str, packet: EngineIOPacket) -> None:
        sent.append((eio_sid, packet.data))

    batch = outlets.batch()
    for n in range(3):
        batch.add(["ready", "behind", "held"], f'2["operation_pending",{{"n":{n}}}]')
    await batch.send(send_packet)

    packets = [f'2["operation_pending",{{"n":{n}}}]' for n in range(3)]
    assert ready[1].transport.writes == [b"".join(message_frame(p) for p in packets)]
    # Something older waits in engine.io's queue, or writes are held back: the same path as it.
    assert behind[1].transport.writes == [] and held[1].transport.writes == []
    assert sent == [(sid, p) for p in packets for sid in ("behind", "held")]
    assert (batch.packets, batch.written) == (9, 3)


def test_a_long_poll_has_no_outlet() -> None:
    outlets = Outlets({})
    outlets.opened("polling", {"asgi.scope": {"type": "http"}, "asgi.send": None})
    assert len(outlets) == 0 and outlets.ready("polling") is None


async def test_the_writer_queue_says_when_its_writer_may_still_hold_packets() -> None:
    queue = WriterQueue()
    assert queue.settled()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert not queue.settled()
    # As engine.io's writer takes them: one get, then get_nowait while there are more.
    assert [await queue.get(), queue.get_nowait()] == ["a", "b"]
    assert queue.empty() and not queue.settled()  # taken, not written yet
    asking = asyncio.create_task(queue.get())  # written, and asking for more
    await asyncio.sleep(0)
    assert queue.settled()
    asking.cancel()
