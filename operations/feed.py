"""The change feed: every process tails the store's change streams and hands each applied change,
in apply order, to its listeners (the Socket.IO hub) and to long-polling HTTP readers; and it
reads back what a reader missed between two cursors (the hub's recovery after a reconnect).

There is one stream per shard (see :mod:`operations.store.shards`); one operation's changes are
all in one, in order. A change's cursor is the position of the feed just after it (see
:mod:`operations.store.changes`, which reads the entries and makes and parses the cursors). On one
Redis server one blocking read covers every stream; on a cluster each stream has its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from operations.backoff import Backoff
from operations.errors import StoreUnavailable
from operations.metrics import Registry
from operations.store.changes import (
    STREAM_FIELDS,
    FeedEntry,
    Missed,
    StreamRanges,
    Visible,
    cursor_of,
    entry_of,
    is_ahead,
    parse_cursor,
)
from operations.store.keys import Keys
from operations.store.redis_client import round_trip
from operations.tasks import BackgroundTasks

__all__ = ["STREAM_FIELDS", "ChangeFeed", "FeedEntry", "Listener", "Missed", "Watch"]

log = logging.getLogger("operations.feed")

_BLOCK_MS = 5_000
# How long past the blocking time a read may take before the connection is given up.
_READ_GRACE_SECONDS = 10.0
_READ_COUNT = 1_000
# While Redis is unreachable, the feed tries again after 0.1 s, 0.2 s, ... up to every 2 s.
_RETRY_FIRST_SECONDS = 0.1
_RETRY_CEILING_SECONDS = 2.0


Listener = Callable[[list[FeedEntry]], None]


class Watch:
    """One waiter's view of one operation's changes: the snapshot of the newest change the feed
    has seen since the watch began. A woken waiter answers from it, without reading Redis."""

    __slots__ = ("_changed", "operation_id", "snapshot")

    def __init__(self, operation_id: str) -> None:
        self.operation_id = operation_id
        self.snapshot: bytes | None = None
        self._changed = asyncio.Event()

    def _notify(self, snapshot: bytes) -> None:
        self.snapshot = snapshot
        self._changed.set()

    async def changed(self, within: float) -> bytes | None:
        """The newest snapshot once there is a change not yet taken, or None if there is none
        within ``within`` seconds."""
        if not self._changed.is_set():
            try:
                async with asyncio.timeout(within):
                    await self._changed.wait()
            except TimeoutError:
                return None
        self._changed.clear()
        return self.snapshot


class ChangeFeed:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        metrics: Registry,
        cluster: bool = False,
        reads: aioredis.Redis | None = None,
    ) -> None:
        """``client`` is the feed's own, for the tail. The feed reads each XREAD and XRANGE
        reply as Redis sends it, and each entry's fields by position; on a cluster, the client
        is told to leave those replies alone. ``reads`` (by default ``client``) carries the
        range reads on one server: the service passes its shared, bounded client."""
        if cluster:
            client.set_response_callback("XREAD", _as_sent)
            client.set_response_callback("XRANGE", _as_sent)
        self.redis = client
        self.metrics = metrics
        self._streams = keys.streams
        self._ranges = StreamRanges(
            self._streams, client if cluster or reads is None else reads, cluster
        )
        self._shard_of = {stream.encode(): shard for shard, stream in enumerate(self._streams)}
        self._ids = ["0-0"] * len(self._streams)
        self._start_cursor = self.last_cursor
        shards = list(range(len(self._streams)))
        self._cluster = cluster
        self._readers = [[shard] for shard in shards] if cluster else [shards]
        self._listeners: list[Listener] = []
        self._watchers: dict[str, set[Watch]] = defaultdict(set)
        self._tasks = BackgroundTasks(metrics, log)
        self._positioned = asyncio.Event()
        self._down: set[int] = set(range(len(self._readers)))
        self._held: AbstractConnection | None = None

    @property
    def connected(self) -> bool:
        return not self._down

    @property
    def last_cursor(self) -> str:
        """The feed's position: the cursor of the last change it handed out."""
        return cursor_of(self._ids)

    def ahead(self, cursor: str, position: str) -> bool:
        """True when ``cursor`` is past ``position`` in some shard (another process has got
        further than this one); false too when either is not a cursor of this layout."""
        shards = len(self._streams)
        mine, theirs = parse_cursor(cursor, shards), parse_cursor(position, shards)
        return mine is not None and theirs is not None and is_ahead(mine, theirs)

    async def missed(
        self, since: str, until: str, visible: Visible, limit: int = 1 << 62
    ) -> Missed:
        """The latest change of each operation ``visible`` lets through that was applied after
        cursor ``since`` and up to cursor ``until``, oldest first, each with its cursor (with
        several shards, ``until``); at most ``limit`` stream entries (everyone's) are read.
        Raises :class:`StoreUnavailable` when Redis cannot answer."""
        try:
            return await self._ranges.missed(since, until, visible, limit)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error

    def subscribe(self, listener: Listener) -> None:
        """Add a listener; it gets every change after :meth:`start_cursor`."""
        self._listeners.append(listener)

    async def start_cursor(self) -> str:
        """The stream position the feed started from, once it has reached Redis."""
        await self._positioned.wait()
        return self._start_cursor

    def watch(self, operation_id: str) -> Watch:
        """A :class:`Watch` of the operation's next changes; pass it to :meth:`unwatch` after."""
        watch = Watch(operation_id)
        self._watchers[operation_id].add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        watchers = self._watchers.get(watch.operation_id)
        if watchers is not None:
            watchers.discard(watch)
            if not watchers:
                del self._watchers[watch.operation_id]

    async def start(self) -> None:
        self._tasks.start("operations-feed", self._run())

    async def stop(self) -> None:
        await self._tasks.stop()
        if self._held is not None:
            held, self._held = self._held, None
            await self.redis.connection_pool.release(held)

    async def _tail(self) -> None:
        """Positions the feed at the newest entry of every stream."""
        backoff = Backoff(_RETRY_FIRST_SECONDS, _RETRY_CEILING_SECONDS)
        while True:
            try:
                for shard, stream in enumerate(self._streams):
                    newest: Any = await self.redis.xrevrange(stream, count=1)
                    self._ids[shard] = newest[0][0].decode() if newest else "0-0"
                self._down.clear()
                return
            except (RedisError, OSError) as error:
                log.warning("change feed waiting for Redis: %s", error)
                await backoff.wait()

    async def _run(self) -> None:
        await self._tail()
        self._start_cursor = self.last_cursor
        self._positioned.set()
        readers = [
            self._tasks.start(f"operations-feed-{reader}", self._read(reader, shards))
            for reader, shards in enumerate(self._readers)
        ]
        await asyncio.wait(readers)  # a reader's failure is logged by the tasks, once

    async def _read(self, reader: int, shards: list[int]) -> None:
        backoff = Backoff(_RETRY_FIRST_SECONDS, _RETRY_CEILING_SECONDS)
        names = [self._streams[shard] for shard in shards]
        read = self._read_routed if self._cluster else self._read_held
        while True:
            try:
                reply = await read(names, [self._ids[shard] for shard in shards])
            except (RedisError, OSError) as error:
                if reader not in self._down:
                    log.warning(
                        "change feed lost Redis, resuming from %s: %s", self.last_cursor, error
                    )
                self._down.add(reader)
                await backoff.wait()
                continue
            if reader in self._down:
                self._down.discard(reader)
                self.metrics.reconnects.inc(dependency="redis-feed")
                backoff.reset()
            # A map of stream to entries over RESP3, a list of pairs over RESP2.
            for stream, entries in reply.items() if isinstance(reply, dict) else reply or []:
                self._dispatch(self._shard_of[stream], entries)

    async def _read_routed(self, names: list[str], ids: list[str]) -> Any:
        """One XREAD through the client, which sends it to the node of the streams' slot."""
        return await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "XREAD", "COUNT", _READ_COUNT, "BLOCK", _BLOCK_MS, "STREAMS", *names, *ids, keys=names
        )

    async def _read_held(self, names: list[str], ids: list[str]) -> Any:
        """One XREAD on a connection the reader keeps for itself (one server): the reads follow
        each other all the time, a few entries each under load, so they skip the pool."""
        pool = self.redis.connection_pool
        connection = self._held
        if connection is None:
            connection = self._held = await pool.get_connection()  # type: ignore[no-untyped-call]
        command = connection.pack_command(
            "XREAD", "COUNT", _READ_COUNT, "BLOCK", _BLOCK_MS, "STREAMS", *names, *ids
        )
        try:
            (reply,) = await round_trip(
                connection, b"".join(command), 1, _BLOCK_MS / 1000 + _READ_GRACE_SECONDS
            )
        except BaseException:
            self._held = None  # closed by round_trip; the pool opens a new one
            await pool.release(connection)
            raise
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _dispatch(self, shard: int, raw: list[tuple[bytes, list[bytes]]]) -> None:
        if not raw:
            return
        ids, single = self._ids, len(self._ids) == 1
        entries = []
        for entry_id, fields in raw:
            ids[shard] = entry_id.decode()
            entries.append(entry_of(ids[shard] if single else cursor_of(ids), fields))
        if self._watchers:
            for entry in entries:
                for watch in self._watchers.get(entry.operation_id, ()):
                    watch._notify(entry.snapshot)
        for listener in self._listeners:
            try:
                listener(entries)
            except Exception:
                log.exception("change listener failed")


def _as_sent(response: Any, **_: Any) -> Any:
    return response
