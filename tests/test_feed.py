"""The change feed against a real Redis, over both protocols: every applied change reaches the
listeners once, in apply order, with its record and cursor, from one stream or from several."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from operations.feed import ChangeFeed, FeedEntry
from operations.keys import Keys
from operations.metrics import Registry
from operations.records import ApplyOutcome, Change
from operations.shards import Shards
from operations.store import RedisStore
from tests.support import eventually, new_id, pending_command


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("shards", [1, 4])
async def test_every_applied_change_reaches_the_listener_once_in_order(
    servers: tuple[str, str], redis_client: aioredis.Redis, protocol: int, shards: int
) -> None:
    keys = Keys(f"feed-{new_id()[:8]}", Shards(shards))
    store = RedisStore(redis_client, ttl_seconds=60, keys=keys)
    await store.apply([pending_command(new_id(), "before")])  # already there: not handed out
    client = aioredis.Redis.from_url(servers[1], protocol=protocol)
    feed = ChangeFeed(client, keys, Registry())
    received: list[FeedEntry] = []
    feed.subscribe(received.extend)
    await feed.start()
    try:
        start = await feed.start_cursor()
        assert len(start.split(",")) == shards
        ops = [new_id() for _ in range(40)]
        users = [f"user-{index % 3}" if index % 5 else None for index in range(40)]
        applied: list[Change] = []
        for first in range(0, 40, 8):
            batch = [
                pending_command(op, user)
                for op, user in zip(ops[first : first + 8], users[first : first + 8], strict=True)
            ]
            for change in await store.apply(batch):
                assert isinstance(change, Change) and change.outcome is ApplyOutcome.APPLIED
                applied.append(change)
            await asyncio.sleep(0.01)

        async def all_received() -> bool:
            return len(received) >= 40

        await eventually(all_received, "40 changes from the feed")
        await asyncio.sleep(0.05)
        assert len(received) == 40
        by_op = {entry.operation_id: entry for entry in received}
        assert set(by_op) == set(ops)
        for op, user, change in zip(ops, users, applied, strict=True):
            entry = by_op[op]
            assert entry.user_id == user
            assert entry.state == "pending"
            assert entry.snapshot == change.snapshot
            assert orjson.loads(entry.snapshot)["id"] == op
            # The cursor names this change's entry in its own shard's stream.
            assert change.cursor in entry.cursor.split(",")
        # One shard's changes arrive in the order they were applied.
        for shard in range(shards):
            mine = [e.operation_id for e in received if keys.shard(e.operation_id) == shard]
            assert mine == [op for op in ops if keys.shard(op) == shard]
        assert received[-1].cursor == feed.last_cursor
    finally:
        await feed.stop()
        await client.aclose()
