"""What the service declares on RabbitMQ: the exchanges the catalogue's formats publish to (topic
or fanout), its own durable queue bound to them, the retry queue and the dead-letter queue, each
of the type :mod:`operations.amqp.queues` describes.

A robust channel declares its queues again, with the same arguments, when it reopens."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed

from operations.amqp.queues import CLASSIC, QueueArguments, QueueType
from operations.errors import ExchangeMismatch, QueueMismatch
from operations.wire import Binding


async def declare_exchanges(
    channel: AbstractChannel, bindings: Iterable[Binding]
) -> dict[str, AbstractExchange]:
    """Each exchange of ``bindings``, durable, of its kind. One that exists with the same kind is
    left as it is; one of another kind is an :class:`ExchangeMismatch`."""
    exchanges: dict[str, AbstractExchange] = {}
    for binding in bindings:
        if binding.exchange in exchanges:
            continue
        try:
            exchanges[binding.exchange] = await channel.declare_exchange(
                binding.exchange, aio_pika.ExchangeType(binding.kind.value), durable=True
            )
        except ChannelPreconditionFailed as error:
            refusal = str(error).removeprefix("PRECONDITION_FAILED - ")
            raise ExchangeMismatch(binding.exchange, binding.kind.value, refusal) from error
    return exchanges


async def declare_queue(
    channel: AbstractChannel,
    bindings: Iterable[Binding],
    queue_name: str,
    arguments: QueueArguments = CLASSIC,
    dead_letter_queue: str | None = None,
) -> AbstractQueue:
    """The consumed queue, bound as ``bindings`` say. With quorum queues, a message delivered
    more often than the delivery limit goes to ``dead_letter_queue`` (``<queue>.dead-letter`` if
    not given)."""
    bound = list(bindings)
    exchanges = await declare_exchanges(channel, bound)
    queue = await declared(
        channel, queue_name, arguments.consumed(dead_letter_queue or f"{queue_name}.dead-letter")
    )
    for binding in bound:
        await queue.bind(exchanges[binding.exchange], routing_key=binding.routing_key)
    return queue


async def declare_retry_queue(
    channel: AbstractChannel, name: str, target: str, arguments: QueueArguments = CLASSIC
) -> AbstractQueue:
    """Messages published here with an expiration go back to ``target`` when it passes."""
    return await declared(channel, name, arguments.retry(target))


async def declare_dead_letter_queue(
    channel: AbstractChannel, name: str, arguments: QueueArguments = CLASSIC
) -> AbstractQueue:
    return await declared(channel, name, arguments.plain())


async def declared(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    """A durable queue with these arguments; a :class:`QueueMismatch` if it exists with others."""
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments or None)
    except ChannelPreconditionFailed as error:
        raise mismatch(name, arguments, str(error)) from error


def mismatch(queue: str, arguments: dict[str, Any], refusal: str) -> QueueMismatch:
    """The broker's refusal of a declaration, as an error that says what was declared. The
    broker names the first argument that differs, which for a queue of the other type is often
    not ``x-queue-type``."""
    kind = arguments.get("x-queue-type", QueueType.CLASSIC.value)
    declared = f"the {kind} queue this service declares (OPERATIONS_QUEUE_TYPE={kind}"
    if "x-delivery-limit" in arguments:
        declared += f", OPERATIONS_QUEUE_DELIVERY_LIMIT={arguments['x-delivery-limit']}"
    return QueueMismatch(queue, declared + ")", refusal.removeprefix("PRECONDITION_FAILED - "))
