"""What the service declares on RabbitMQ: the catalogue's topic exchanges, its own durable queue
bound by message name, and the dead-letter queue."""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from .catalogue import Subscription


async def declare_exchanges(
    channel: AbstractChannel, names: list[str]
) -> dict[str, AbstractExchange]:
    exchanges = {}
    for name in names:
        exchanges[name] = await channel.declare_exchange(
            name, aio_pika.ExchangeType.TOPIC, durable=True
        )
    return exchanges


async def declare_queue(
    channel: AbstractChannel, bindings: Iterable[Subscription], queue_name: str
) -> AbstractQueue:
    subscriptions = list(bindings)
    exchanges = await declare_exchanges(channel, sorted({s.exchange for s in subscriptions}))
    queue = await channel.declare_queue(queue_name, durable=True)
    for subscription in subscriptions:
        await queue.bind(exchanges[subscription.exchange], routing_key=subscription.message)
    return queue


async def declare_retry_queue(channel: AbstractChannel, name: str, target: str) -> AbstractQueue:
    """Messages published here with an expiration go back to ``target`` when it passes."""
    return await channel.declare_queue(
        name,
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target},
    )


async def declare_dead_letter_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    return await channel.declare_queue(name, durable=True)
