"""Redis holds only what is live: the whole service, with short lifetimes, under steady traffic
on the real RabbitMQ and Redis (operations published as Convey would, orders through their
saga), keeps no member of any set or sorted set for an operation or saga that has expired."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from operations.auth.identity import normalise_id
from operations.pacco.demo import DemoServices
from operations.settings import Settings
from operations.store.keys import Keys, unpack_id
from tests.support import Publisher, as_text, eventually, new_id, start_service

TTL = 3
SWEEP = 1


@pytest.fixture
def short_lived(settings: Settings) -> Settings:
    return replace(
        settings,
        operation_ttl_seconds=TTL,
        saga_ttl_seconds=TTL,
        saga_tombstone_seconds=60,
        sweep_seconds=SWEEP,
    )


async def dead_members(client: aioredis.Redis, settings: Settings) -> dict[str, set[str]]:
    """Per set or sorted set under the service's prefix, the members that name an operation or
    a saga no longer stored (tombstones and the saga types set name neither)."""
    keys = Keys(settings.key_prefix)
    tag = keys.tag(0)
    dead: dict[str, set[str]] = {}
    async for raw in client.scan_iter(match=f"{settings.key_prefix}:*", count=1_000):
        # A record's key names a GUID by its 16 bytes: not text, and not a set either.
        key = raw.decode(errors="backslashreplace")
        kind = as_text(await client.type(raw))
        if kind not in ("zset", "set") or key.endswith(("saga-types", "saga-tombstones", "owners")):
            continue
        values: Any = await (client.zrange(raw, 0, -1) if kind == "zset" else client.smembers(raw))
        for member in values:
            # An operation's member is its id's stored form (a GUID's 16 bytes), as its key's.
            if ":saga" in key:
                value, stored = member.decode(), f"{tag}:saga:{member.decode()}".encode()
            else:
                value, stored = unpack_id(member), keys.record_of(0, member)
            if not await client.exists(stored):
                dead.setdefault(key, set()).add(value)
    return dead


@pytest.mark.slow
async def test_under_steady_traffic_the_sets_hold_only_live_members(
    short_lived: Settings, redis_client: aioredis.Redis, publisher: Publisher, token: Any
) -> None:
    user = str(uuid.uuid4())
    bearer = {"Authorization": f"Bearer {token(user)}"}
    async with (
        start_service(short_lived) as running,
        DemoServices(short_lived.amqp_url, latency_ms=2),
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        burst: list[str] = []
        orders: list[str] = []
        started = time.monotonic()
        while time.monotonic() - started < 5:  # the burst: operations and orders
            for _ in range(5):
                op = new_id()
                burst.append(op)
                await publisher.publish("create_order", op, user=user)
                await publisher.publish("order_created", op, user=user)
            if len(orders) < (time.monotonic() - started):
                response = await http.post(
                    "/orders",
                    json={"customerId": user, "parcelIds": [str(uuid.uuid4())]},
                    headers=bearer,
                )
                assert response.status_code == 202, response.text
                orders.append(response.json()["operationId"])
            await asyncio.sleep(0.1)

        # Then a trickle that keeps the shard's indexes from expiring whole, for longer than a
        # lifetime plus a sweep: whatever the burst left must be swept, not expired.
        trickle: dict[str, float] = {}
        while time.monotonic() - started < 5 + TTL + SWEEP + 3:
            op = new_id()
            trickle[op] = time.monotonic()
            await publisher.publish("create_order", op, user=user)
            await asyncio.sleep(0.5)

        dead = await dead_members(redis_client, short_lived)
        recent = {
            normalise_id(op)
            for op, at in trickle.items()
            if time.monotonic() - at < TTL + SWEEP + 1.5
        }
        left = {key: values - recent for key, values in dead.items() if values - recent}
        assert left == {}, {key: len(values) for key, values in left.items()}
        swept = running.service.metrics.swept
        assert swept.value(what="operation") >= len(burst)
        assert swept.value(what="saga") == len(orders) >= 4

        # A finished order's start message, redelivered after its saga expired, starts nothing.
        order = orders[0]
        sagas = running.service.sagas
        assert sagas is not None
        assert await sagas.store.load("order_making", order) is None
        assert await sagas.store.tombstoned("order_making", order)
        before = sagas.metrics.sagas.value(saga="order_making", outcome="ignored_tombstoned")
        await publisher.publish(
            "make_order",
            order,
            user=user,
            name="make_order",
            body={"orderId": str(uuid.uuid4()), "customerId": user, "parcelIds": ["p"]},
        )

        async def tombstoned() -> float | None:
            outcome = sagas.metrics.sagas.value(saga="order_making", outcome="ignored_tombstoned")
            return outcome if outcome > before else None

        assert (
            await eventually(tombstoned, "the start to meet the tombstone", timeout=5) == before + 1
        )
        assert await sagas.store.load("order_making", order) is None
