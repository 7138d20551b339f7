"""Connections to Redis: one server, or a Redis Cluster (``OPERATIONS_REDIS_CLUSTER``).

Both give the same asyncio client interface; the store's keys are sharded so that every command
and script that names several keys names keys of one slot (see :mod:`operations.shards`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError


def open_redis(url: str, cluster: bool, socket_timeout: float = 10.0) -> aioredis.Redis:
    """A client for ``url``; with ``cluster``, one that follows the cluster's slot map (the URL
    names any one node of it)."""
    if cluster:
        # RedisCluster is not a subclass of Redis, but offers the same commands, pipelines and
        # scripts for keys of one slot, which is all the service sends.
        return cast(
            aioredis.Redis,
            RedisCluster.from_url(url, socket_connect_timeout=5, socket_timeout=socket_timeout),
        )
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=socket_timeout, health_check_interval=15
    )


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
