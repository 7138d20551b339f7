"""Changes written straight to each WebSocket client's connection.

engine.io sends every packet through a queue of the socket's own: the sender puts it there, and
a writer task per socket wakes, takes it, frames it and writes it, one write per packet. At
15,000 clients and 1,000 changes a second (ten admins get every change) that per-recipient work
is most of the pusher's time. Here the hub frames a change once for all its recipients and
writes one batch's frames to each client in one write.

It does so only when that keeps the order: the client's socket is open on a WebSocket, nothing
waits in its engine.io queue and its writer holds nothing it has taken from there (a packet
there, such as the Socket.IO connect or an ``operations_sync``, is older than this change, and
the socket's writer sends it; the change then takes the same path), and the connection is not
holding writes back for a slow reader. The queue (:class:`WriterQueue`) tells when its writer
may hold packets: from the moment it takes some until it asks for more, having written them. Only uvicorn's default WebSocket protocol, without permessage-deflate, is written to;
any other connection (a long-poll, compression on, another server) keeps engine.io's path.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engineio.packet import MESSAGE as EIO_MESSAGE
from engineio.packet import Packet as EngineIOPacket
from websockets.protocol import State

TEXT_FIN = 0x81  # FIN, opcode 1 (text); a server's frames are not masked


def text_frame(payload: bytes) -> bytes:
    """One complete, unmasked WebSocket text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((TEXT_FIN, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", TEXT_FIN, 126, size) + payload
    return struct.pack("!BBQ", TEXT_FIN, 127, size) + payload


def message_frame(packet: str) -> bytes:
    """The frame of an engine.io MESSAGE carrying an encoded Socket.IO packet."""
    return text_frame(b"4" + packet.encode())


class WriterQueue(asyncio.Queue[Any]):
    """engine.io's per-socket queue, which also says whether the socket's writer may still hold
    packets it took. The writer takes packets (a ``get``, then ``get_nowait`` while there are
    more), writes them all, then asks again; it holds none once it asks."""

    taken = False

    async def get(self) -> Any:
        self.taken = False
        return await super().get()  # which takes the packet with get_nowait

    def get_nowait(self) -> Any:
        packet = super().get_nowait()
        self.taken = True
        return packet

    def settled(self) -> bool:
        """Nothing waits here and nothing taken from here is still to be written."""
        return not self.taken and self.empty()


def _protocol(environ: Mapping[str, Any]) -> Any | None:
    """uvicorn's connection behind a WebSocket request, or None for any other request."""
    scope = environ.get("asgi.scope")
    if not isinstance(scope, dict) or scope.get("type") != "websocket":
        return None
    protocol = getattr(environ.get("asgi.send"), "__self__", None)
    conn = getattr(protocol, "conn", None)
    if conn is None or not hasattr(protocol, "transport") or not hasattr(conn, "extensions"):
        return None
    return protocol


class Outlets:
    """The connections the hub may write to itself, by engine.io sid."""

    def __init__(self, sockets: Mapping[str, Any]) -> None:
        """``sockets`` is engine.io's own table of open sockets, whose queues must be
        :class:`WriterQueue` (the server's ``create_queue``)."""
        self._sockets = sockets
        self._protocols: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._protocols)

    def opened(self, eio_sid: str, environ: Mapping[str, Any]) -> None:
        protocol = _protocol(environ)
        if protocol is not None:
            self._protocols[eio_sid] = protocol

    def closed(self, eio_sid: str) -> None:
        self._protocols.pop(eio_sid, None)

    def ready(self, eio_sid: str) -> Any | None:
        """The connection to write to now, or None when the packet must take engine.io's path."""
        protocol = self._protocols.get(eio_sid)
        if protocol is None:
            return None
        socket = self._sockets.get(eio_sid)
        if (
            socket is None
            or not socket.upgraded
            or socket.upgrading
            or socket.closing
            or socket.closed
            or not isinstance(socket.queue, WriterQueue)
            or not socket.queue.settled()
        ):
            return None
        conn = protocol.conn
        if (
            conn.state is not State.OPEN
            or conn.extensions
            or protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or protocol.transport.is_closing()
        ):
            return None
        return protocol

    def batch(self) -> Batch:
        return Batch(self)


SendPacket = Callable[[str, EngineIOPacket], Awaitable[None]]
"""engine.io's ``send_packet``: queues a packet to a socket."""


class Batch:
    """The packets of one run of changes, by the path each recipient's packets take. A
    recipient's path is decided at its first packet and kept for the whole batch, so its
    packets stay in order."""

    def __init__(self, outlets: Outlets) -> None:
        self._outlets = outlets
        self._frames: dict[str, list[bytes]] = {}  # by engine.io sid, for ready connections
        self._connections: dict[str, Any] = {}
        self._engine_io: set[str] = set()
        self._queued: list[tuple[str, EngineIOPacket]] = []
        self.packets = 0
        self.written = 0  # of them, written here rather than queued to engine.io

    def add(self, recipients: list[str], encoded: str) -> None:
        """One change's Socket.IO packet for these engine.io sids."""
        frame: bytes | None = None
        packet: EngineIOPacket | None = None
        for eio_sid in recipients:
            frames = self._frames.get(eio_sid)
            if frames is None and eio_sid not in self._engine_io:
                connection = self._outlets.ready(eio_sid)
                if connection is None:
                    self._engine_io.add(eio_sid)
                else:
                    self._connections[eio_sid] = connection
                    frames = self._frames[eio_sid] = []
            if frames is not None:
                frame = frame or message_frame(encoded)
                frames.append(frame)
            else:
                packet = packet or EngineIOPacket(EIO_MESSAGE, data=encoded)
                self._queued.append((eio_sid, packet))
        self.packets += len(recipients)

    async def send(self, send_packet: SendPacket) -> None:
        """Writes each ready connection's frames in one write, then queues the rest. Nothing is
        awaited between finding a connection ready and writing to it, so it still is."""
        for eio_sid, frames in self._frames.items():
            transport = self._connections[eio_sid].transport
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            self.written += len(frames)
        for eio_sid, packet in self._queued:
            await send_packet(eio_sid, packet)
