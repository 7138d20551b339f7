"""Benchmark traffic: operations shaped as a .NET Convey publisher sends them."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

KINDS = (
    ("orders", "create_order", b"{}"),
    ("orders", "order_created", b"{}"),
    ("orders", "create_order_rejected", b'{"code":"bench","reason":"benchmark rejection"}'),
)
ADMIN_USER = "bench-admin"


def message(
    index: int, operation_id: str | None = None, user: str | None = None
) -> tuple[str, str, aio_pika.Message]:
    exchange, name, body = KINDS[index % len(KINDS)]
    context = {
        "CorrelationId": uuid.uuid4().hex,
        "Name": name,
        "User": {"Id": user or f"bench-user-{index % 100}", "IsAuthenticated": True},
    }
    return (
        exchange,
        name,
        aio_pika.Message(
            body,
            correlation_id=operation_id or uuid.uuid4().hex,
            message_id=uuid.uuid4().hex,
            timestamp=dt.datetime.now(dt.UTC),
            headers={"message_context": bytearray(orjson.dumps(context))},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
    )


async def exchanges(channel: AbstractChannel) -> dict[str, AbstractExchange]:
    return {name: await channel.get_exchange(name) for name in {kind[0] for kind in KINDS}}


async def publish(connection: AbstractRobustConnection, count: int, start: int = 0) -> None:
    """Publish ``count`` messages, one new operation each, with publisher confirms."""
    async with connection.channel(publisher_confirms=True) as channel:
        targets = await exchanges(channel)
        window = 500
        for first in range(start, start + count, window):
            publishes = []
            for index in range(first, min(first + window, start + count)):
                exchange, name, body = message(index)
                publishes.append(targets[exchange].publish(body, routing_key=name))
            await asyncio.gather(*publishes)
