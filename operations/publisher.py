"""Publishing to RabbitMQ the way a Convey service does: persistent, confirmed by the broker, with
the correlation id, a message id, the ``message_context`` header, for sagas the ``Saga`` header,
and the W3C ``traceparent`` of the trace it belongs to (see :mod:`operations.tracing`)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from . import tracing
from .states import State


def saga_header(state: State) -> str:
    """``Pending``, ``Completed`` or ``Rejected``, as .NET's ``SagaStates.ToString()`` writes it."""
    return state.value.capitalize()


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

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: Mapping[str, Any],
        *,
        correlation_id: str | None,
        message_id: str,
        message_context: Mapping[str, Any],
        saga: State | None = None,
        confirm_within: float = 10.0,
        trace_context: Mapping[str, str] | None = None,
    ) -> None:
        """Returns once the broker has confirmed the message; raises if it could not. It belongs
        to the current trace, or to ``trace_context`` (headers kept by :func:`tracing.carrier`)."""
        headers: dict[str, Any] = {"message_context": orjson.dumps(dict(message_context)).decode()}
        if saga is not None:
            headers["Saga"] = saga_header(saga)
        target = await self._exchange(exchange)
        with tracing.publishing(
            exchange, routing_key, headers, message_id, correlation_id, trace_context
        ):
            await target.publish(
                aio_pika.Message(
                    orjson.dumps(dict(body)),
                    headers=headers,
                    content_type="application/json",
                    correlation_id=correlation_id,
                    message_id=message_id,
                    timestamp=dt.datetime.now(dt.UTC),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
                timeout=confirm_within,
            )
