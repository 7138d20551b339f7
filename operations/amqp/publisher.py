"""Publishing to RabbitMQ the way a Convey service does: persistent, confirmed by the broker, with
the correlation id, a message id, the ``message_context`` header, for sagas the ``Saga`` header,
and the W3C ``traceparent`` of the trace it belongs to (see :mod:`operations.tracing`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import AMQPError

from operations import tracing
from operations.states import State


def saga_header(state: State) -> str:
    """``Pending``, ``Completed`` or ``Rejected``, as .NET's ``SagaStates.ToString()`` writes it."""
    return state.value.capitalize()


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to publish, built once by whoever sends it."""

    exchange: str
    routing_key: str
    body: Mapping[str, Any]
    correlation_id: str | None
    message_id: str
    message_context: Mapping[str, Any]
    saga: State | None = None
    """The ``Saga`` header's state; None sends no ``Saga`` header."""
    trace_context: Mapping[str, str] | None = None
    """The trace it belongs to (headers kept by :func:`tracing.carrier`); None: the current one."""


class AmqpPublisher:
    def __init__(self, connection: AbstractRobustConnection) -> None:
        self.connection = connection
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._lock = asyncio.Lock()

    async def _exchange(self, name: str) -> AbstractExchange:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self.connection.channel(publisher_confirms=True)
                self._exchanges.clear()
            if name not in self._exchanges:
                self._exchanges[name] = await self._channel.declare_exchange(
                    name, aio_pika.ExchangeType.TOPIC, durable=True
                )
            return self._exchanges[name]

    async def close(self) -> None:
        """Closes its channel; the connection is its owner's to close."""
        async with self._lock:
            channel, self._channel = self._channel, None
            self._exchanges.clear()
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(AMQPError, ConnectionError, OSError, RuntimeError):
                    await channel.close()

    async def publish(self, message: OutgoingMessage, *, confirm_within: float = 10.0) -> None:
        """Returns once the broker has confirmed the message; raises if it could not."""
        headers: dict[str, Any] = {
            "message_context": orjson.dumps(dict(message.message_context)).decode()
        }
        if message.saga is not None:
            headers["Saga"] = saga_header(message.saga)
        target = await self._exchange(message.exchange)
        with tracing.publishing(
            message.exchange,
            message.routing_key,
            headers,
            message.message_id,
            message.correlation_id,
            message.trace_context,
        ):
            await target.publish(
                aio_pika.Message(
                    orjson.dumps(dict(message.body)),
                    headers=headers,
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                    message_id=message.message_id,
                    timestamp=dt.datetime.now(dt.UTC),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=message.routing_key,
                timeout=confirm_within,
            )
