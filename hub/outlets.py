"""engine.io sockets opened on a WebSocket, served by the hub: packets written straight to the
connection, no tasks of their own while idle.

engine.io serves a WebSocket with a queue per socket and a writer task that waits on it (two
tasks in Python 3.11, as ``wait_for`` wraps the wait), a task per message it reads, and a task
per ping that sleeps the ping interval: about 9 KiB and four tasks per idle client, and for every
packet a queue put, a task wake-up and a write. For a socket whose connection opened on a
WebSocket (``transport=websocket``, as every client of ours and socket.io-client's default
connect), the hub installs an :class:`Outlet` when engine.io announces it, before engine.io
accepts the WebSocket: the socket's ``send`` writes the packet's frame at once, its pings are a
timer, and its messages are read in the request's own task. The hub frames a change once for all
its recipients and writes a run of changes to a client in one write.

A packet is written at once only when that keeps the order: nothing is waiting to be written
before it, and the connection is not holding writes back for a slow reader. Otherwise it waits
in the outlet's backlog, which a task writes through the ASGI connection (waiting while writes
are held back), and every later packet queues behind it. With ``OPERATIONS_WS_COMPRESSION``
every packet of a connection that negotiated compression takes that path, so it is compressed.
A connection that opened as a long-poll and upgraded keeps engine.io's own path.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from collections.abc import Mapping
from typing import Any

from engineio import exceptions as engineio_errors
from engineio import packet as engineio_packet
from engineio.async_socket import AsyncSocket
from engineio.packet import MESSAGE as EIO_MESSAGE
from engineio.packet import Packet as EngineIOPacket
from websockets.protocol import State

from operations.tasks import BackgroundTasks

log = logging.getLogger("hub")

TEXT_FIN = 0x81  # FIN, opcode 1 (text); a server's frames are not masked
BINARY_FIN = 0x82


def frame(payload: bytes, first: int = TEXT_FIN) -> bytes:
    """One complete, unmasked WebSocket frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def message_frame(packet: str) -> bytes:
    """The frame of an engine.io MESSAGE carrying an encoded Socket.IO packet."""
    return frame(b"4" + packet.encode())


def packet_frame(packet: EngineIOPacket) -> bytes:
    encoded = packet.encode()
    if isinstance(encoded, str):
        return frame(encoded.encode())
    return frame(bytes(encoded), BINARY_FIN)


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


class Outlet:
    """One engine.io socket on its WebSocket, written to by the hub."""

    def __init__(self, socket: AsyncSocket, protocol: Any, tasks: BackgroundTasks) -> None:
        self.socket = socket
        self.protocol = protocol
        self.tasks = tasks
        self.ws: Any = None  # engine.io's wrapper of the ASGI connection, once accepted
        self.backlog: collections.deque[EngineIOPacket] = collections.deque()
        self.writing: asyncio.Task[None] | None = None  # writes the backlog
        self.shutting = False  # the WebSocket is to be closed once the backlog is written
        self.ping: asyncio.TimerHandle | None = None
        socket.send = self.send
        socket.schedule_ping = self.schedule_ping
        socket._websocket_handler = self.serve
        # What engine.io queued already (its OPEN) is the outlet's to write: the queue is left
        # empty and settled, so a close that waits for it to be written does not wait forever.
        while not socket.queue.empty():
            self.backlog.append(socket.queue.get_nowait())
            socket.queue.task_done()

    def ready(self) -> bool:
        """Whether a frame written now keeps the order and the connection's state."""
        return not self.backlog and self.writing is None and self._open()

    def _open(self) -> bool:
        """Accepted, open, uncompressed, and not holding writes back."""
        protocol = self.protocol
        conn = protocol.conn
        return (
            self.ws is not None
            and not self.shutting
            and not self.socket.closed
            and conn.state is State.OPEN
            and not conn.extensions
            and not protocol.close_sent
            and not protocol.disconnected
            and protocol.writable.is_set()
            and not protocol.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        """Frames written at once; only right after :meth:`ready` said so."""
        self.protocol.transport.write(data)

    async def send(self, packet: EngineIOPacket) -> None:
        """engine.io's ``send``: closes a socket whose client stopped answering pings."""
        if await AsyncSocket.check_ping_timeout(self.socket):
            self.put(packet)

    def put(self, packet: EngineIOPacket) -> None:
        if self.shutting:
            return
        if self.ready():
            self.write(packet_frame(packet))
        else:
            self.backlog.append(packet)
            self._write_later()
        if packet.packet_type == engineio_packet.CLOSE:
            self.shut()

    def shut(self) -> None:
        """Closes the WebSocket once what was sent before is written."""
        if not self.shutting:
            self.shutting = True
            self._write_later()

    def schedule_ping(self) -> None:
        """engine.io's: the next ping once the client answered the last one, on a timer."""
        if self.socket.last_ping:
            self.socket.last_ping = None
            loop = asyncio.get_running_loop()
            self.ping = loop.call_later(self.socket.server.ping_interval, self._ping)

    def _ping(self) -> None:
        self.ping = None
        if not self.socket.closing and not self.socket.closed:
            self.socket.last_ping = time.time()
            self.put(EngineIOPacket(engineio_packet.PING))

    def _write_later(self) -> None:
        if self.writing is None and self.ws is not None:
            self.writing = self.tasks.start("hub-socket-writer", self._write_backlog())

    async def _write_backlog(self) -> None:
        try:
            while self.backlog:
                packet = self.backlog.popleft()
                await self.ws.send(packet.encode())
            if self.shutting:
                await self.ws.close()
        except Exception:  # the client has gone: what is left is never written
            self.backlog.clear()
        finally:
            self.writing = None

    async def serve(self, ws: Any) -> None:
        """engine.io's WebSocket handler, for a socket that opened on this WebSocket: reads
        the client's packets in the request's task until it leaves, stops answering, or the
        socket is closed."""
        socket = self.socket
        server = socket.server
        socket.connected = socket.upgraded = True
        self.ws = ws
        if self.backlog and self.writing is None and self._open():
            # What was sent before the WebSocket was accepted (the OPEN, at least), at once.
            self.write(b"".join(packet_frame(packet) for packet in self.backlog))
            self.backlog.clear()
        if self.backlog or self.shutting:
            self._write_later()
        timeout = server.ping_interval + server.ping_timeout
        try:
            while not self.shutting:
                try:
                    async with asyncio.timeout(timeout):
                        data = await ws.wait()
                except (OSError, TimeoutError):
                    break
                if data is None or len(data) > server.max_http_buffer_size:
                    break
                try:
                    packet = EngineIOPacket(encoded_packet=data)
                except Exception:
                    break
                try:
                    await socket.receive(packet)
                except engineio_errors.UnknownPacketError:
                    pass
                except engineio_errors.SocketIsClosedError:
                    break
                except Exception:
                    log.exception("engine.io packet from %s failed", socket.sid)
        finally:
            if self.ping is not None:
                self.ping.cancel()
            self.shut()
            try:
                await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
            finally:
                self.release()

    def release(self) -> None:
        """Lets go of the closed socket, so that reference counting frees both (see
        :mod:`hub.partings`): its methods are engine.io's own again (which refuse a closed
        socket, as the outlet's do), and engine.io's WebSocket no longer calls back here. The
        backlog's writer keeps the WebSocket until it has closed it."""
        for name in ("send", "schedule_ping", "_websocket_handler"):
            self.socket.__dict__.pop(name, None)
        if self.ws is not None:
            self.ws.handler = None


class Outlets:
    """The hub's outlets, by engine.io sid."""

    def __init__(self, sockets: Mapping[str, Any], tasks: BackgroundTasks) -> None:
        self._sockets = sockets  # engine.io's own table of open sockets
        self._tasks = tasks
        self._outlets: dict[str, Outlet] = {}

    def __len__(self) -> int:
        return len(self._outlets)

    def opened(self, eio_sid: str, environ: Mapping[str, Any]) -> None:
        """engine.io announces a socket, before it accepts its WebSocket."""
        socket = self._sockets.get(eio_sid)
        protocol = _protocol(environ)
        if socket is not None and protocol is not None and not socket.upgraded:
            self._outlets[eio_sid] = Outlet(socket, protocol, self._tasks)

    def closed(self, eio_sid: str) -> None:
        self._outlets.pop(eio_sid, None)

    def get(self, eio_sid: str) -> Outlet | None:
        return self._outlets.get(eio_sid)

    def batch(self) -> Batch:
        return Batch(self)


class Batch:
    """The packets of one run of changes: each ready outlet's frames written in one write, the
    rest sent one by one. A recipient's path is decided at its first packet and kept for the
    whole batch, so its packets stay in order."""

    def __init__(self, outlets: Outlets) -> None:
        self._outlets = outlets
        self._ready: dict[str, tuple[Outlet, list[bytes]]] = {}  # by engine.io sid, its frames
        self._later: set[str] = set()
        self._queued: list[tuple[str, EngineIOPacket]] = []
        self.packets = 0
        self.written = 0  # of them, written straight to the connection

    def add(self, recipients: list[str], encoded: str) -> None:
        """One change's Socket.IO packet for these engine.io sids."""
        message: bytes | None = None
        packet: EngineIOPacket | None = None
        for eio_sid in recipients:
            ready = self._ready.get(eio_sid)
            if ready is None and eio_sid not in self._later:
                outlet = self._outlets.get(eio_sid)
                if outlet is None or not outlet.ready():
                    self._later.add(eio_sid)
                else:
                    ready = self._ready[eio_sid] = (outlet, [])
            if ready is not None:
                message = message or message_frame(encoded)
                ready[1].append(message)
            else:
                packet = packet or EngineIOPacket(EIO_MESSAGE, data=encoded)
                self._queued.append((eio_sid, packet))
        self.packets += len(recipients)

    async def send(self, send_packet: Any) -> None:
        """Writes each ready outlet's frames (nothing was awaited since it was found ready, so
        it still is), then sends the rest through engine.io's ``send_packet``."""
        for outlet, frames in self._ready.values():
            outlet.write(frames[0] if len(frames) == 1 else b"".join(frames))
            self.written += len(frames)
        for eio_sid, packet in self._queued:
            await send_packet(eio_sid, packet)
