"""The change feed: every process tails the store's change stream and hands each applied change,
in apply order, to its listeners (the Socket.IO hub) and to long-polling HTTP readers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .metrics import Registry
from .store import Keys

log = logging.getLogger("operations.feed")

_BLOCK_MS = 5_000
_READ_COUNT = 1_000


@dataclass(frozen=True)
class FeedEntry:
    cursor: str
    operation_id: str
    user_id: str | None
    state: str
    snapshot: bytes


Listener = Callable[[list[FeedEntry]], None]


class ChangeFeed:
    def __init__(self, client: aioredis.Redis, keys: Keys, metrics: Registry) -> None:
        self.redis = client
        self.keys = keys
        self.metrics = metrics
        self.last_cursor = self._start_cursor = "0-0"
        self._listeners: list[Listener] = []
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._positioned = asyncio.Event()
        self.connected = False

    def subscribe(self, listener: Listener) -> None:
        """Add a listener; it gets every change after :meth:`start_cursor`."""
        self._listeners.append(listener)

    async def start_cursor(self) -> str:
        """The stream position the feed started from, once it has reached Redis."""
        await self._positioned.wait()
        return self._start_cursor

    def watch(self, operation_id: str) -> asyncio.Event:
        """An event set at the next change of the operation; pass it to :meth:`unwatch` after."""
        event = asyncio.Event()
        self._watchers[operation_id].add(event)
        return event

    def unwatch(self, operation_id: str, event: asyncio.Event) -> None:
        watchers = self._watchers.get(operation_id)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._watchers[operation_id]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="operations-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tail_cursor(self) -> str:
        while True:
            try:
                newest: Any = await self.redis.xrevrange(self.keys.changes, count=1)
                self.connected = True
                return newest[0][0].decode() if newest else "0-0"
            except (RedisError, OSError) as error:
                log.warning("change feed waiting for Redis: %s", error)
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        self.last_cursor = self._start_cursor = await self._tail_cursor()
        self._positioned.set()
        failures = 0
        while True:
            try:
                reply: Any = await self.redis.xread(
                    {self.keys.changes: self.last_cursor}, count=_READ_COUNT, block=_BLOCK_MS
                )
            except (RedisError, OSError) as error:
                if self.connected:
                    log.warning(
                        "change feed lost Redis, resuming from %s: %s", self.last_cursor, error
                    )
                self.connected = False
                failures += 1
                await asyncio.sleep(min(0.1 * failures, 2.0))
                continue
            if not self.connected:
                self.connected = True
                self.metrics.reconnects.inc(dependency="redis-feed")
            failures = 0
            for _, entries in reply or []:
                self._dispatch([_entry(entry_id, fields) for entry_id, fields in entries])

    def _dispatch(self, entries: list[FeedEntry]) -> None:
        if not entries:
            return
        self.last_cursor = entries[-1].cursor
        for entry in entries:
            for event in self._watchers.get(entry.operation_id, ()):
                event.set()
        for listener in self._listeners:
            try:
                listener(entries)
            except Exception:
                log.exception("change listener failed")


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> FeedEntry:
    snapshot = fields[b"op"]
    user = fields.get(b"user", b"").decode()
    return FeedEntry(
        entry_id.decode(), fields[b"id"].decode(), user or None, fields[b"state"].decode(), snapshot
    )
