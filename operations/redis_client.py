"""Connections to Redis: one server, or a Redis Cluster (``OPERATIONS_REDIS_CLUSTER``).

Both give the same asyncio client interface; the store's keys are sharded so that every command
and script that names several keys names keys of one slot (see :mod:`operations.shards`).
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster


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
