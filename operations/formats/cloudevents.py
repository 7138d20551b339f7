"""CloudEvents over RabbitMQ: events of any producer that writes CloudEvents 1.0 (or 0.3).

There is no AMQP 0-9-1 binding in the specification, and producers differ, so both content modes
and every prefix in use are read:

- binary mode: the attributes in headers prefixed ``ce-`` (Knative, the Python SDK's ``rabbitmq``
  binding), ``cloudEvents_`` (Spring AMQP, the ``amqp`` binding's application properties) or
  ``cloudEvents:`` (AMQP 1.0 clients), in any letter case; ``content_type`` is the
  ``datacontenttype`` and the body is the data;
- structured mode: ``content_type: application/cloudevents+json``, the body a JSON object of the
  attributes and ``data`` (or ``data_base64``).

The event's ``type`` is the catalogue's type name, ``id`` the message id, the AMQP
``correlation_id`` (or else the ``correlationid`` attribute) the operation id, ``authid`` (the
Auth Context extension) the user and ``time`` the time sent. A rejected event's ``data``, when a
JSON object, carries ``reason`` and ``code``.

Version 0.3 is read as 1.0 is: its required attributes and every attribute read here mean the
same in both, and the SDK still writes it; only its ``datacontentencoding: base64`` differs.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from operations.envelope import (
    Delivered,
    Envelope,
    as_text,
    folded,
    header,
    header_text,
    json_object,
    message_id,
    operation_id,
    rejection,
    saga_state,
    text_field,
    user_id,
)
from operations.errors import EnvelopeError
from operations.states import State, decide
from operations.wire import Binding, Entry, ExchangeKind, snake_case, written_by

EXCHANGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,254}")
"""What an exchange may be: Convey's rule widened to upper case and ``:``, within AMQP's 255."""

MAX_NAME_BYTES = 255
VERSIONS = frozenset({"1.0", "0.3"})
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("id", "source", "type")

_PREFIXES = ("cloudevents_", "cloudevents:")


class CloudEvents:
    name = "cloudevents"
    options = frozenset({"exchange", "routingKeys"})

    def check(self, entry: Entry) -> str | None:
        if entry.exchange is None:
            return "needs a string 'exchange' (the topic exchange its events are published to)"
        if not EXCHANGE.fullmatch(entry.exchange):
            return f"has an invalid exchange name {entry.exchange!r}"
        if entry.routing_keys == ():
            return "has an empty 'routingKeys': name at least one, or leave it out for every type"
        for name in entry.kinds:
            if not _printable(name):
                return f"invalid event type {name!r}: non-empty, printable, at most 255 bytes"
        for key in entry.routing_keys or ():
            if not _printable(key):
                return f"invalid routing key {key!r}: non-empty, printable, at most 255 bytes"
        return None

    def bindings(self, entry: Entry) -> list[Binding]:
        assert entry.exchange is not None  # checked
        keys = entry.routing_keys if entry.routing_keys is not None else tuple(entry.kinds)
        return [Binding(entry.exchange, ExchangeKind.TOPIC, key) for key in keys]

    def read(self, delivered: Delivered, entry: Entry, max_bytes: int) -> Envelope:
        exchange = delivered.exchange or ""
        headers = delivered.headers or {}
        media = _media_type(delivered.content_type)
        problems: list[str] = []
        if media == STRUCTURED:
            attributes = _structured(delivered.body, max_bytes)
            data_type = attributes.get("datacontenttype")
        elif media == BATCH:
            raise EnvelopeError(
                "content_type",
                f"a batch of CloudEvents ({BATCH}), which is not read: publish each event"
                " as a message of its own",
            )
        elif media.startswith("application/cloudevents"):
            raise EnvelopeError(
                "content_type",
                f"a structured CloudEvent as {media!r}, which is not read: only {STRUCTURED}",
            )
        else:
            attributes = _binary(headers)
            data_type = media or attributes.get("datacontenttype")

        version = _required(attributes, "specversion", delivered, media)
        if version not in VERSIONS:
            raise EnvelopeError(
                "specversion", f"{version!r} is not a CloudEvents version read here (1.0, 0.3)"
            )
        event_id, _, event_type = (_required(attributes, key, delivered, media) for key in REQUIRED)
        kind = entry.kinds.get(event_type)
        if kind is None:
            raise EnvelopeError(
                "type", f"{event_type!r} on exchange {exchange!r} is not in the catalogue"
            )

        state = decide(kind, saga_state(header(headers, "Saga"), problems))
        correlation = delivered.correlation_id
        if correlation is None or not correlation.strip():
            correlation = text_field(attributes, "correlationid", "correlationid", problems)
        user = user_id(text_field(attributes, "authid", "authid", problems), "authid", problems)
        sent_at = _time(attributes.get("time"), problems)

        code = reason = None
        if media != STRUCTURED and len(delivered.body) > max_bytes:
            problems.append(
                f"body: {len(delivered.body)} bytes exceeds the limit of {max_bytes}, not read"
            )
        elif state is State.REJECTED:
            fields = folded(_data(attributes, delivered.body, media, data_type, problems))
            code, reason = rejection(fields, "data", problems)

        return Envelope(
            message=event_type,
            exchange=exchange,
            kind=kind,
            state=state,
            operation_id=operation_id(correlation),
            message_id=message_id(event_id),
            user_id=user,
            name=snake_case(event_type),
            code=code,
            reason=reason,
            sent_at=sent_at,
            problems=tuple(problems),
        )

    def recognises(self, delivered: Delivered) -> bool:
        if _media_type(delivered.content_type) == STRUCTURED:
            return True
        return "specversion" in _binary(delivered.headers or {})


def _printable(name: str) -> bool:
    return name != "" and name.isprintable() and len(name.encode()) <= MAX_NAME_BYTES


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def _binary(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a binary-mode event, by their names in lower case."""
    attributes: dict[str, Any] = {}
    for key, value in headers.items():
        lowered = key.lower()
        if lowered.startswith("ce-"):
            attributes.setdefault(lowered[3:], value)
        elif lowered.startswith(_PREFIXES):
            attributes.setdefault(lowered[12:], value)
    return attributes


def _structured(body: bytes, max_bytes: int) -> dict[str, Any]:
    if len(body) > max_bytes:
        raise EnvelopeError(
            "body",
            f"{len(body)} bytes exceeds the limit of {max_bytes}; a structured CloudEvent's"
            " attributes are in its body, so it cannot be read",
        )
    found: list[str] = []
    attributes = json_object(body, "body", found)
    if found:
        raise EnvelopeError(
            "body",
            f"{found[0].removeprefix('body: ')}, so not a structured CloudEvent ({STRUCTURED})",
        )
    return attributes


def _required(attributes: Mapping[str, Any], key: str, delivered: Delivered, media: str) -> str:
    value = attributes.get(key)
    if value is None:
        if key == "specversion":
            raise EnvelopeError("specversion", _no_version(delivered, media))
        raise EnvelopeError(key, f"the CloudEvent has no {key!r}, which every CloudEvent has")
    text = header_text(value)
    if text is None or text.strip() == "":
        raise EnvelopeError(key, f"expected a non-empty string, got {value!r:.40}")
    return text


def _no_version(delivered: Delivered, media: str) -> str:
    """Why a message without ``specversion`` is not read, naming what it seems to be."""
    if media == STRUCTURED:
        return f"a structured CloudEvent ({STRUCTURED}) without specversion"
    what = written_by(delivered, ("cloudevents",)) or "a message"
    return (
        f"not a CloudEvent: {what} with no specversion (no ce-, cloudEvents_ or cloudEvents:"
        f" header, and content type {delivered.content_type or 'none'!s}, not {STRUCTURED})"
    )


def _time(value: Any, problems: list[str]) -> dt.datetime | None:
    """``time``: RFC 3339 text, or, from an AMQP 1.0 producer, a timestamp (an AMQP 0-9-1
    timestamp, or milliseconds since the epoch as the SDK's ``amqp`` binding writes it)."""
    if value is None:
        return None
    moment: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            moment = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        except (OverflowError, OSError, ValueError):
            moment = None
    else:
        text = as_text(value)
        if text is not None and len(text) <= 64 and text[10:11] in ("T", "t"):
            try:
                moment = dt.datetime.fromisoformat(text.strip())
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is None:
                moment = None
    if moment is None:
        problems.append(f"time: not an RFC 3339 time with an offset: {value!r:.64}")
        return None
    return moment.astimezone(dt.UTC)


def _data(
    attributes: Mapping[str, Any],
    body: bytes,
    media: str,
    data_type: Any,
    problems: list[str],
) -> Mapping[str, Any]:
    """A rejected event's data as a JSON object, or ``{}`` when it is none (data of another
    content type is not read; JSON data that is not an object is a problem)."""
    if media != STRUCTURED:
        if not body or not _is_json(data_type):
            return {}
        return json_object(body, "data", problems)
    data = attributes.get("data")
    encoded = attributes.get("data_base64")
    if encoded is None and attributes.get("datacontentencoding") == "base64":  # 0.3
        encoded, data = data, None
    if encoded is not None:
        if not _is_json(data_type):
            return {}
        try:
            raw = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            problems.append("data_base64: not valid base64")
            return {}
        return json_object(raw, "data", problems)
    if data is None:
        return {}
    if not isinstance(data, dict):
        if _is_json(data_type):
            problems.append(f"data: expected a JSON object, got {type(data).__name__}")
        return {}
    return data


def _is_json(data_type: Any) -> bool:
    """Whether ``datacontenttype`` says JSON; absent, the JSON format's default is JSON."""
    if data_type is None:
        return True
    media = _media_type(header_text(data_type))
    return media.endswith(("/json", "+json"))


FORMAT = CloudEvents()
