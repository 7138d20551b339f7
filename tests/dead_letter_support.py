"""Helpers for the dead-letter workbench's tests: dead-letter copies put straight on a
dead-letter queue, as the service's consumer publishes them, and admin reads of the API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import aio_pika
import httpx
import orjson

from operations.amqp.copies import (
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DISPOSITION_HEADER,
    EXCHANGE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
)


def copy_headers(
    reason: str = "body: not a JSON object",
    at: dt.datetime | None = None,
    letter_id: str | None = None,
    routing_key: str = "order_created",
) -> dict[str, Any]:
    """The headers the consumer puts on a dead-letter copy."""
    return {
        "message_context": '{"user":{"id":"u"}}',
        EXCHANGE_HEADER: "orders",
        ROUTING_KEY_HEADER: routing_key,
        REASON_HEADER: reason,
        DISPOSITION_HEADER: "not-applied",
        DEAD_LETTERED_AT_HEADER: (at or dt.datetime.now(dt.UTC)).isoformat(),
        DEAD_LETTER_ID_HEADER: letter_id or uuid.uuid4().hex,
    }


async def put_copies(
    connection: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    headers: list[dict[str, Any]],
    body: bytes = b"[1, 2]",
) -> None:
    """Publishes one copy per headers onto ``queue`` (declared as the service declares a
    dead-letter queue), confirmed by the broker."""
    async with connection.channel(publisher_confirms=True) as channel:
        await channel.declare_queue(queue, durable=True)
        for one in headers:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    headers=one,
                    correlation_id=uuid.uuid4().hex,
                    message_id=uuid.uuid4().hex,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )


async def letters(
    http: httpx.AsyncClient, admin: dict[str, str], **query: str
) -> list[dict[str, Any]]:
    response = await http.get("/dead-letters", params=query, headers=admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = orjson.loads(response.content)["items"]
    return items
