"""The shared Redis pool once its client is closed: it opens nothing more, and a connection
handed back late is closed, so that no socket outlives the service's Redis client."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from operations.store.redis_client import SharedPool, open_redis


async def test_a_closed_client_opens_no_connection_and_closes_one_handed_back_late(
    servers: tuple[str, str],
) -> None:
    client = open_redis(servers[1], cluster=False, pool_size=4)
    pool = client.connection_pool
    assert isinstance(pool, SharedPool)
    assert await client.ping()
    held: AbstractConnection = await pool.get_connection()
    assert held.is_connected

    await client.aclose()

    with pytest.raises(RedisConnectionError, match="closed"):
        await client.ping()
    # A caller that held a connection across the close hands it back afterwards.
    await pool.release(held)
    assert not held.is_connected
    connections = [*pool._available_connections, *pool._in_use_connections]
    assert connections and not any(connection.is_connected for connection in connections)
