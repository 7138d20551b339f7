"""Connections to Redis: one server, or a Redis Cluster (``OPERATIONS_REDIS_CLUSTER``).

Both give the same asyncio client interface; the store's keys are sharded so that every command
and script that names several keys names keys of one slot (see :mod:`operations.store.shards`).

On one server, the client the store, the sagas, the dead letters and the hub share draws on a
:class:`SharedPool` of at most ``OPERATIONS_REDIS_POOL_SIZE`` connections: past it, a caller
queues (first come, first served) for up to :data:`POOL_WAIT_SECONDS` instead of failing at once.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, NamedTuple, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

POOL_WAIT_SECONDS = 5.0
"""How long a caller waits for a connection of a full pool before the command fails."""


class SharedPool(BlockingConnectionPool):
    """A bounded pool that queues callers when all its connections are in use, and counts
    them, so that :func:`pool_usage` can tell a saturated pool.

    Once closed (the client's ``aclose``) it stays closed: a caller still running then gets a
    ``ConnectionError`` instead of a new connection, and a connection handed back then (a
    release the pool finishes in the background) is closed, not kept, so that no socket
    outlives the pool."""

    waiting = 0
    closed = False

    async def disconnect(self, inuse_connections: bool = True) -> None:
        self.closed = True
        await super().disconnect(inuse_connections)

    async def release(self, connection: AbstractConnection) -> None:
        await super().release(connection)
        if self.closed:
            await connection.disconnect(nowait=True)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self.closed:
            raise RedisConnectionError("the Redis client is closed")
        queued = not self.can_get_connection()  # else it takes or opens one without waiting
        self.waiting += queued
        try:
            connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
                *args, **kwargs
            )
        finally:
            self.waiting -= queued
        return connection


class PoolUsage(NamedTuple):
    in_use: int
    waiting: int
    size: int

    @property
    def saturated(self) -> bool:
        """Every connection in use, or callers queued for one."""
        return self.waiting > 0 or self.in_use >= self.size


def open_redis(
    url: str, cluster: bool, socket_timeout: float = 10.0, pool_size: int | None = None
) -> aioredis.Redis:
    """A client for ``url``; with ``cluster``, one that follows the cluster's slot map (the URL
    names any one node of it). With ``pool_size``, one server's client draws on a
    :class:`SharedPool` of that many connections."""
    if cluster:
        # RedisCluster is not a subclass of Redis, but offers the same commands, pipelines and
        # scripts for keys of one slot, which is all the service sends.
        return cast(
            aioredis.Redis,
            RedisCluster.from_url(url, socket_connect_timeout=5, socket_timeout=socket_timeout),
        )
    options: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "socket_timeout": socket_timeout,
        "health_check_interval": 15,
    }
    if pool_size is None:
        return aioredis.Redis.from_url(url, **options)
    pool = SharedPool.from_url(url, max_connections=pool_size, timeout=POOL_WAIT_SECONDS, **options)
    return aioredis.Redis.from_pool(pool)


def pool_usage(client: aioredis.Redis) -> PoolUsage | None:
    """How much of the client's :class:`SharedPool` is taken; None for any other client."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SharedPool):
        return None
    return PoolUsage(len(pool._in_use_connections), pool.waiting, pool.max_connections)


async def round_trip(
    connection: AbstractConnection, packed: bytes, replies: int, within: float
) -> list[Any]:
    """Writes ``packed`` (``replies`` commands already encoded as RESP) at once and reads their
    replies in order, all within ``within`` seconds, with none of a pipeline's work per command.
    An error reply stands in the list for its own command. On any failure the connection is
    closed: whatever is left unread would otherwise be taken for the next commands' replies."""
    answers: list[Any] = []
    try:
        await connection.send_packed_command(packed)
        async with asyncio.timeout(within):
            for _ in range(replies):
                try:
                    answers.append(await connection.read_response(timeout=math.inf))
                except ResponseError as error:
                    answers.append(error)
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    return answers
