"""A lean Socket.IO client for the throughput figure: one WebSocket, and just enough of the
Engine.IO 4 / Socket.IO 5 protocol to connect with ``auth``, answer the server's pings, and decode
every event it receives.

python-socketio's client starts a task for every message it receives; on a 2-core machine that
client takes CPU from the service it measures. This one decodes each packet in the receiving
loop. The bench reports the full path with both clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from operations.errors import OperationsError

PUSH_EVENTS = frozenset({"operation_pending", "operation_completed", "operation_rejected"})
_OPEN, _PING, _PONG, _MESSAGE = "0", "2", "3", "4"
_CONNECT, _DISCONNECT, _EVENT, _CONNECT_ERROR = "0", "1", "2", "4"


class ProbeRefused(OperationsError):
    """The benchmark's Socket.IO probe was refused."""

    code = "probe_refused"


class Arrivals:
    """When each operation's first push arrived; ``complete`` once ``expected`` have."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.via_sync = 0
        self.complete = asyncio.Event()
        self.expected = 0

    def pushed(self, record: dict[str, Any]) -> None:
        self.arrived.setdefault(record["id"], time.time())
        if self.expected and len(self.arrived) >= self.expected:
            self.complete.set()

    def synced(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if record["id"] not in self.arrived:
                self.via_sync += 1
                self.pushed(record)


class Probe(Arrivals):
    """Notes when each operation's first push arrives, like the bench's python-socketio client."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, token: str, since: str | None = None, **options: Any) -> None:
        """``options`` go to websockets' ``connect`` (and on to the loop's
        ``create_connection``), e.g. ``ping_interval=None`` or ``local_addr``."""
        auth: dict[str, Any] = {"token": token}
        if since is not None:
            auth["since"] = since
        socket = await connect(self.url, max_size=None, compression=None, **options)
        opening = await socket.recv()
        if not isinstance(opening, str) or not opening.startswith(_OPEN):
            await socket.close()
            raise ProbeRefused(f"no Engine.IO open packet: {opening!r:.80}")
        await socket.send(_MESSAGE + _CONNECT + orjson.dumps(auth).decode())
        answer = await socket.recv()
        if not isinstance(answer, str) or not answer.startswith(_MESSAGE + _CONNECT):
            await socket.close()
            raise ProbeRefused(f"the server refused the connection: {answer!r:.200}")
        self._socket = socket
        self._reader = asyncio.create_task(self._read(socket), name="bench-probe")

    async def _read(self, socket: ClientConnection) -> None:
        async for packet in socket:
            if not isinstance(packet, str) or not packet:
                continue
            kind = packet[0]
            if kind == _PING:
                await socket.send(_PONG)
            elif kind == _MESSAGE and packet[1:2] == _EVENT:
                name, data = orjson.loads(packet[2:])[:2]
                if name in PUSH_EVENTS:
                    self.pushed(data)
                elif name == "operations_sync":
                    self.synced(data["operations"])

    async def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.send(_MESSAGE + _DISCONNECT)
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
