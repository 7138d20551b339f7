"""NServiceBus messages for tests, from the fixtures under tests/fixtures/nservicebus/ (each
cites the NServiceBus source it follows): as delivered to a reader, and published with aio-pika to
a type's fanout exchange as the RabbitMQ transport publishes them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aio_pika
import orjson

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nservicebus"


def fixture(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return document


@dataclass(frozen=True)
class Delivery:
    """A delivered message shaped like aio-pika's IncomingMessage (the ``Delivered`` protocol)."""

    exchange: str | None
    routing_key: str | None = ""
    body: bytes = b"{}"
    headers: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    message_id: str | None = None
    timestamp: dt.datetime | None = None
    content_type: str | None = "application/json"


def delivery(name: str, headers: Mapping[str, Any] | None = None, **changes: Any) -> Delivery:
    """The fixture ``name`` as delivered, its headers changed by ``headers`` (None removes one)."""
    document = fixture(name)
    merged = {**document["headers"], **(headers or {})}
    properties = document["properties"]
    built = Delivery(
        exchange=document["exchange"],
        body=orjson.dumps(document["body"]),
        headers={key: value for key, value in merged.items() if value is not None},
        correlation_id=properties["correlation_id"],
        message_id=properties["message_id"],
        content_type=properties["content_type"],
    )
    return replace(built, **changes)


async def publish(
    channel: aio_pika.abc.AbstractChannel,
    name: str,
    conversation: str,
    user: str,
    message_id: str | None = None,
    *,
    as_bytes: bool = False,
) -> str:
    """The fixture ``name`` published as the transport publishes it, with these ids; header
    values as str (an AMQP long string) or ``as_bytes`` (a byte array). Its message id."""
    document = fixture(name)
    message_id = message_id or str(uuid.uuid4())
    headers = {
        **document["headers"],
        "NServiceBus.MessageId": message_id,
        "NServiceBus.ConversationId": conversation,
        "UserId": user,
    }
    values = {
        key: bytearray(value.encode()) if as_bytes else value for key, value in headers.items()
    }
    properties = document["properties"]
    exchange = await channel.declare_exchange(
        document["exchange"], aio_pika.ExchangeType.FANOUT, durable=True
    )
    await exchange.publish(
        aio_pika.Message(
            orjson.dumps(document["body"]),
            headers=values,
            message_id=message_id,
            correlation_id=properties["correlation_id"],
            type=properties["type"],
            content_type=properties["content_type"],
            reply_to=properties["reply_to"],
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key="",
    )
    return message_id


async def publish_delivery(channel: aio_pika.abc.AbstractChannel, message: Delivery) -> None:
    assert message.exchange is not None
    exchange = await channel.declare_exchange(
        message.exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    await exchange.publish(
        aio_pika.Message(
            message.body,
            headers=dict(message.headers),
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            content_type=message.content_type,
        ),
        routing_key=message.routing_key or "",
    )
