"""A reply as a .NET Convey service publishes it: the command's correlation id, a new message id,
the caller's ``message_context`` and ``Saga`` headers carried over, a persistent JSON body, and the
trace: the command's ``traceparent`` and ``tracestate`` carried over, or, when this process
traces, those of the span handling the command."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import HeadersType

from operations import tracing
from operations.envelope import Delivered, named_fields

FORWARDED_HEADERS = frozenset({"message_context", "saga", "traceparent", "tracestate"})


def reply_message(command: Delivered, body: Mapping[str, str]) -> aio_pika.Message:
    headers = forwarded_headers(command.headers or {})
    tracing.inject(headers)
    return aio_pika.Message(
        orjson.dumps(dict(body)),
        headers=headers,
        correlation_id=command.correlation_id,
        message_id=uuid.uuid4().hex,
        timestamp=dt.datetime.now(dt.UTC),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def forwarded_headers(headers: Mapping[str, Any]) -> HeadersType:
    """The context headers under the key and with the value they arrived with.

    pamqp can encode a ``bytearray`` but not ``bytes`` (which it decodes from a non-UTF-8 long
    string), so bytes go back out as the same octets in a bytearray."""
    forwarded: HeadersType = {
        key: bytearray(value) if isinstance(value, bytes) else value
        for key, value in named_fields(headers, FORWARDED_HEADERS).items()
    }
    return forwarded
