"""A real Socket.IO client (python-socketio's AsyncClient) that records what it receives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio

from tests.support import eventually

OPERATION_EVENTS = ("operation_pending", "operation_completed", "operation_rejected")


class LiveClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, Any]] = []
        self.connect_error: Any = None
        self.disconnected = asyncio.Event()
        self.client.on("*", self._any)
        self.client.on("connect_error", self._refused)
        self.client.on("disconnect", self._gone)

    async def _any(self, event: str, data: Any = None) -> None:
        self.received.append((event, data))

    async def _refused(self, data: Any = None) -> None:
        self.connect_error = data

    async def _gone(self, *_: Any) -> None:
        self.disconnected.set()

    async def connect(
        self, auth: dict[str, Any] | None = None, websocket_only: bool = True
    ) -> None:
        await self.client.connect(
            self.url,
            auth=auth,
            transports=["websocket"] if websocket_only else ["polling", "websocket"],
            socketio_path="socket.io",
            wait_timeout=10,
        )

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()
        session = getattr(self.client.eio, "http", None)
        if session is not None and not session.closed:  # left open by a refused connect
            await session.close()

    def records(self, op: str | None = None) -> list[dict[str, Any]]:
        """Operation events (live ones and those inside operations_sync), in arrival order."""
        found: list[dict[str, Any]] = []
        for event, data in self.received:
            if event in OPERATION_EVENTS:
                found.append(data)
            elif event == "operations_sync":
                found.extend(data["operations"])
        return [r for r in found if op is None or r["id"] == op]

    def events(self, name: str) -> list[Any]:
        return [data for event, data in self.received if event == name]

    async def wait_for(
        self, check: Callable[[LiveClient], bool], what: str, timeout: float = 15.0
    ) -> None:
        async def done() -> bool:
            return check(self)

        await eventually(done, what, timeout=timeout)

    async def wait_for_state(self, op: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        await self.wait_for(
            lambda c: any(r["state"] == state for r in c.records(op)),
            f"{op} to be {state} on the socket",
            timeout,
        )
        return next(r for r in self.records(op) if r["state"] == state)
