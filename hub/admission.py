"""Who may stay connected: each connection's deadline to bring a valid token, and each user's
sockets against the cap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from operations.auth.identity import Principal


@dataclass
class Client:
    """A Socket.IO client of this process: its recovery cursor, who it is once admitted, and
    its timers."""

    since: str | None = None
    principal: Principal | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class Deadlines:
    """The engine.io connections open on this process, and a deadline for each one that has no
    admitted client; when it passes, ``expire`` is called with the connection's engine.io sid."""

    def __init__(self, expire: Callable[[str], None]) -> None:
        self._expire = expire
        self._open: set[str] = set()
        self._due: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        """Open connections not admitted yet."""
        return len(self._due)

    def is_open(self, eio_sid: str | None) -> bool:
        return eio_sid in self._open

    def opened(self, eio_sid: str, timeout: float) -> None:
        self._open.add(eio_sid)
        self.expect(eio_sid, timeout)

    def expect(self, eio_sid: str | None, timeout: float) -> None:
        """Gives an open connection ``timeout`` seconds to be admitted, unless it has a deadline."""
        if eio_sid is None or eio_sid in self._due or eio_sid not in self._open:
            return
        loop = asyncio.get_running_loop()
        self._due[eio_sid] = loop.call_later(max(timeout, 0.0), self._expire, eio_sid)

    def admitted(self, eio_sid: str | None) -> None:
        timer = self._due.pop(eio_sid, None) if eio_sid is not None else None
        if timer is not None:
            timer.cancel()

    def closed(self, eio_sid: str) -> None:
        self._open.discard(eio_sid)
        self.admitted(eio_sid)

    def passed(self, eio_sid: str) -> bool:
        """True (once) when the connection's deadline passed before it was admitted or closed."""
        return self._due.pop(eio_sid, None) is not None

    def cancel(self) -> None:
        for timer in self._due.values():
            timer.cancel()
        self._due.clear()


class SocketsPerUser:
    """Admitted sockets by user, against the cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._count: dict[str, int] = {}

    def has_room(self, user: str) -> bool:
        return self._count.get(user, 0) < self.cap

    def add(self, user: str) -> None:
        self._count[user] = self._count.get(user, 0) + 1

    def remove(self, user: str) -> None:
        left = self._count.get(user, 1) - 1
        if left > 0:
            self._count[user] = left
        else:
            self._count.pop(user, None)
