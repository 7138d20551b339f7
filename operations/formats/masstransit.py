"""MassTransit's format (contract §16), as MassTransit 8 writes messages on RabbitMQ.

Each message type is published to a fanout exchange of its own, ``Namespace:TypeName``; a failed
consumer publishes ``Fault<T>`` to ``MassTransit:Fault--Namespace:TypeName--``. A message comes
in one of two modes:

- the envelope (``application/vnd.masstransit+json``, both the System.Text.Json and the
  Newtonsoft serializers): a camelCase JSON object holding the ids, ``messageType`` (a list of
  ``urn:message:Namespace:TypeName``), ``sentTime``, a ``headers`` object and the ``message``;
- raw JSON (``application/json``): the body is the message, and the ids and the
  ``;``-separated types are AMQP headers (``MessageId``, ``ConversationId``, ``MT-MessageType``).

A ``Fault<T>`` of a listed type rejects the operation with its first exception's message and
type. Its ids are those of the fault; it carries the faulted message's conversation, correlation
and headers (MassTransit's ``FaultPipe``), so it finds the same operation and owner.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from operations.envelope import (
    Delivered,
    Envelope,
    folded,
    header,
    header_text,
    header_user,
    json_object,
    message_id,
    operation_id,
    rejection,
    saga_state,
    text_field,
)
from operations.errors import EnvelopeError
from operations.states import MessageKind, State, decide
from operations.wire import (
    Binding,
    Entry,
    ExchangeKind,
    check_dotnet_entry,
    dotnet_exchange,
    snake_case,
    written_by,
)

ENVELOPE_TYPE = "application/vnd.masstransit+json"
RAW_TYPE = "application/json"
VENDOR_TYPE = "application/vnd.masstransit"
"""Every MassTransit serializer's content type starts so (``+bson``, ``+xml``, ``+aes``,
``.v2+aes``, ``+msgpack``); only the JSON envelope is read."""
TYPES_HEADER = "MT-MessageType"
URN = "urn:message:"
FAULT = "MassTransit:Fault[["
DEFAULT_USER_HEADER = "UserId"
SHOWN_TYPES = 5

SENT_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)?",
    re.IGNORECASE,
)
"""ISO 8601 as .NET writes a ``DateTime``: up to seven fractional digits (ticks), which
``datetime.fromisoformat`` does not take before Python 3.11."""


class MassTransit:
    name = "masstransit"
    options = frozenset({"operationId", "userHeader"})

    def check(self, entry: Entry) -> str | None:
        return check_dotnet_entry(entry)

    def bindings(self, entry: Entry) -> list[Binding]:
        found = [Binding(exchange(name), ExchangeKind.FANOUT) for name in entry.kinds]
        found += [
            Binding(fault_exchange(name), ExchangeKind.FANOUT)
            for name, kind in entry.kinds.items()
            if kind is MessageKind.COMMAND
        ]
        return found

    def read(self, delivered: Delivered, entry: Entry, max_bytes: int) -> Envelope:
        content_type = (delivered.content_type or "").partition(";")[0].strip().lower()
        if content_type == ENVELOPE_TYPE:
            return _from_envelope(delivered, entry, max_bytes)
        exchange = delivered.exchange or ""
        if content_type.startswith(VENDOR_TYPE):
            raise EnvelopeError(
                "content_type",
                f"a MassTransit message of content type {content_type!r} on {exchange!r}:"
                " only JSON (the envelope or raw JSON) is read",
            )
        headers = delivered.headers or {}
        if TYPES_HEADER in headers:
            if content_type != RAW_TYPE:
                raise EnvelopeError(
                    "content_type",
                    f"a raw MassTransit message of content type {content_type!r} on"
                    f" {exchange!r}: only JSON is read",
                )
            return _from_raw(delivered, entry, max_bytes)
        raise EnvelopeError(
            "format",
            f"{_looks_like(delivered)} on {exchange!r}, which the catalogue lists as"
            f" MassTransit's, is not a MassTransit message (no content type {ENVELOPE_TYPE!r}"
            f" and no {TYPES_HEADER} header)",
        )

    def recognises(self, delivered: Delivered) -> bool:
        content_type = (delivered.content_type or "").partition(";")[0].strip().lower()
        return content_type == ENVELOPE_TYPE or TYPES_HEADER in (delivered.headers or {})


def exchange(type_name: str) -> str:
    """The fanout exchange MassTransit publishes ``type_name`` to (its RabbitMQ entity name
    formatter: a nested type's ``+`` becomes ``-``)."""
    return dotnet_exchange(type_name).replace("+", "-")


def fault_exchange(type_name: str) -> str:
    """Where ``Fault<type_name>`` is published: the generic type's arguments between ``--``,
    each without the namespace when it is the generic type's own (``MassTransit``)."""
    inner = exchange(type_name)
    if inner.startswith("MassTransit:"):
        inner = inner.removeprefix("MassTransit:")
    return f"MassTransit:Fault--{inner}--"


def _from_envelope(delivered: Delivered, entry: Entry, max_bytes: int) -> Envelope:
    body = delivered.body
    if len(body) > max_bytes:
        raise EnvelopeError(
            "body",
            f"{len(body)} bytes exceeds the limit of {max_bytes}; the envelope holds the"
            " message's ids, so nothing of it is read",
        )
    unread: list[str] = []
    document = json_object(body, "body", unread)
    if unread:
        raise EnvelopeError("body", f"not a MassTransit envelope ({unread[0]})")
    problems: list[str] = []
    type_name, fault = _type(_listed_types(document.get("messageType")), entry)
    headers = document.get("headers")
    if headers is None:
        headers = {}
    elif not isinstance(headers, Mapping):
        problems.append(f"headers: expected an object, got {type(headers).__name__}")
        headers = {}
    message = document.get("message")
    if not isinstance(message, Mapping):
        problems.append(f"message: expected an object, got {type(message).__name__}")
        message = {}
    field = entry.operation_id or "conversationId"
    ids = _ids(document.get("messageId"), document.get(field), field)
    return _envelope(
        delivered,
        entry,
        type_name,
        fault,
        ids,
        headers,
        ("message", message),
        _sent_at(document.get("sentTime"), "sentTime", problems),
        problems,
    )


def _from_raw(delivered: Delivered, entry: Entry, max_bytes: int) -> Envelope:
    headers = delivered.headers or {}
    types = header_text(headers[TYPES_HEADER]) or ""
    type_name, fault = _type(types.split(";"), entry)
    raw_id = header_text(header(headers, "MessageId")) or delivered.message_id
    if entry.operation_id == "correlationId":
        raw_operation = header_text(header(headers, "CorrelationId")) or delivered.correlation_id
    else:
        raw_operation = header_text(header(headers, "ConversationId"))
    problems: list[str] = []
    body = delivered.body
    if len(body) > max_bytes:
        problems.append(f"body: {len(body)} bytes exceeds the limit of {max_bytes}, not read")
        message: Mapping[str, Any] = {}
    else:
        message = json_object(body, "body", problems)
    return _envelope(
        delivered,
        entry,
        type_name,
        fault,
        _ids(raw_id, raw_operation, entry.operation_id or "conversationId"),
        headers,
        ("body", message),
        delivered.timestamp,
        problems,
    )


def _envelope(
    delivered: Delivered,
    entry: Entry,
    type_name: str,
    fault: bool,
    ids: tuple[str, str | None],
    headers: Mapping[str, Any],
    message: tuple[str, Mapping[str, Any]],
    sent_at: dt.datetime | None,
    problems: list[str],
) -> Envelope:
    """``message``: where the message's own fields are (the envelope's ``message``, a raw
    message's body), and they."""
    the_id, the_operation = ids
    where, fields = message[0], folded(message[1])
    user_header = entry.user_header or DEFAULT_USER_HEADER
    user = header_user(header(headers, user_header), f"headers.{user_header}", problems)
    code = reason = None
    if fault:
        # The faulted message's headers ride on its fault, its Saga header among them: the
        # fault itself always rejects.
        kind, state = MessageKind.REJECTED_EVENT, State.REJECTED
        code, reason = _exception(fields, where, problems)
        shown, name, the_id = (
            f"MassTransit.Fault[{type_name}]",
            f"{snake_case(type_name)}_fault",
            f"fault:{the_id}",
        )
    else:
        kind = entry.kinds[type_name]
        state = decide(kind, saga_state(header(headers, "Saga"), problems))
        shown, name = type_name, snake_case(type_name)
        if state is State.REJECTED:
            code, reason = rejection(fields, where, problems)
    return Envelope(
        message=shown,
        exchange=delivered.exchange or "",
        kind=kind,
        state=state,
        operation_id=the_operation,
        message_id=the_id,
        user_id=user,
        name=name,
        code=code,
        reason=reason,
        sent_at=sent_at,
        problems=tuple(problems),
    )


def _ids(raw_id: object, raw_operation: object, field: str) -> tuple[str, str | None]:
    """The message id (required) and the operation id (None when absent)."""
    if raw_id is not None and not isinstance(raw_id, str):
        raise EnvelopeError("messageId", f"expected a string, got {type(raw_id).__name__}")
    the_id = message_id(raw_id)
    if the_id is None:
        raise EnvelopeError("messageId", "missing, and MassTransit sets it on every message")
    if raw_operation is not None and not isinstance(raw_operation, str):
        raise EnvelopeError(field, f"expected a string, got {type(raw_operation).__name__}")
    return the_id, operation_id(raw_operation)


def _listed_types(raw: object) -> Sequence[object]:
    if not isinstance(raw, list) or not raw:
        raise EnvelopeError("messageType", "missing: expected a list of message type URNs")
    return raw


def _type(urns: Sequence[object], entry: Entry) -> tuple[str, bool]:
    """The listed type the message is, by its first URN of a listed type, and whether it is a
    ``Fault`` of it."""
    for urn in urns:
        if not isinstance(urn, str) or not urn.startswith(URN):
            continue
        name = urn[len(URN) :]
        fault = name.startswith(FAULT) and name.endswith("]]")
        if fault:
            name = name[len(FAULT) : -2]
        namespace, colon, short = name.rpartition(":")
        dotted = f"{namespace}.{short}"
        if colon and dotted in entry.kinds:
            return dotted, fault
    shown = ", ".join(repr(str(urn)[:200]) for urn in urns[:SHOWN_TYPES])
    more = f" and {len(urns) - SHOWN_TYPES} more" if len(urns) > SHOWN_TYPES else ""
    raise EnvelopeError(
        "messageType", f"none of its types is in the catalogue for {entry.where}: {shown}{more}"
    )


def _exception(
    fields: Mapping[str, Any], where: str, problems: list[str]
) -> tuple[str | None, str | None]:
    """A fault's first exception: the short name of its type, and its message."""
    exceptions = fields.get("exceptions")
    if not isinstance(exceptions, list) or not exceptions or not isinstance(exceptions[0], Mapping):
        problems.append(f"{where}.exceptions: expected a list of exceptions")
        return None, None
    first = folded(exceptions[0])
    label = f"{where}.exceptions[0]"
    reason = text_field(first, "message", f"{label}.message", problems)
    full = text_field(first, "exceptiontype", f"{label}.exceptionType", problems)
    code = None
    if full is not None:
        code = re.split(r"[<\[`]", full, maxsplit=1)[0].rsplit(".", 1)[-1].rsplit("+", 1)[-1]
    return code or None, reason


def _sent_at(raw: object, label: str, problems: list[str]) -> dt.datetime | None:
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else None
    found = SENT_TIME.fullmatch(text.strip()) if text is not None else None
    if found is None:
        problems.append(f"{label}: not an ISO 8601 time")
        return None
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    offset = dt.UTC
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        moment = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, offset
        )
    except ValueError:
        problems.append(f"{label}: not an ISO 8601 time")
        return None
    return moment.astimezone(dt.UTC)


def _looks_like(delivered: Delivered) -> str:
    """What a message that is not MassTransit's seems to be, for the reason given."""
    content_type = delivered.content_type
    found = written_by(delivered, ("masstransit",))
    if found is not None:
        return found
    return f"a message of content type {content_type!r}" if content_type else "a message"


FORMAT = MassTransit()
