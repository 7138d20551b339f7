"""NServiceBus's format, over its RabbitMQ transport's conventional routing topology.

An event is published to the fanout exchange of its type, ``Namespace:TypeName``; the body is the
message itself (JSON), and everything else is a string header: ``NServiceBus.MessageId``,
``NServiceBus.ConversationId``, ``NServiceBus.CorrelationId``, ``NServiceBus.EnclosedMessageTypes``
(the assembly-qualified names of the type and its ancestors, ``;``-separated) and
``NServiceBus.TimeSent``. The user is a header the entry names (``UserId`` by default).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from operations.envelope import (
    Delivered,
    Envelope,
    as_text,
    folded,
    header,
    header_user,
    json_object,
    message_id,
    operation_id,
    rejection,
    saga_state,
)
from operations.errors import EnvelopeError
from operations.states import State, decide
from operations.wire import (
    Binding,
    Entry,
    ExchangeKind,
    check_dotnet_entry,
    snake_case,
    written_by,
)

MESSAGE_ID = "NServiceBus.MessageId"
ENCLOSED_TYPES = "NServiceBus.EnclosedMessageTypes"
TIME_SENT = "NServiceBus.TimeSent"
OPERATION_HEADERS = {
    "conversationId": "NServiceBus.ConversationId",
    "correlationId": "NServiceBus.CorrelationId",
}
DEFAULT_OPERATION_ID = "conversationId"
DEFAULT_USER_HEADER = "UserId"

# DateTimeOffsetHelper's wire format, "yyyy-MM-dd HH:mm:ss:ffffff Z", always UTC.
TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d):(\d{6}) Z", re.ASCII)


class NServiceBus:
    name = "nservicebus"
    options = frozenset({"operationId", "userHeader"})

    def check(self, entry: Entry) -> str | None:
        return check_dotnet_entry(entry)

    def bindings(self, entry: Entry) -> list[Binding]:
        exchanges = dict.fromkeys(exchange_of(type_name) for type_name in entry.kinds)
        return [Binding(exchange, ExchangeKind.FANOUT) for exchange in exchanges]

    def read(self, delivered: Delivered, entry: Entry, max_bytes: int) -> Envelope:
        exchange = delivered.exchange or ""
        headers = delivered.headers or {}
        foreign = written_by(delivered, (self.name, "convey"))
        if foreign is not None:
            raise EnvelopeError(
                "format", f"{foreign} on {exchange!r}, which the catalogue lists as NServiceBus's"
            )
        own_id = _id(headers, MESSAGE_ID, message_id)
        if own_id is None:
            looks = " (a Convey message?)" if header(headers, "message_context") else ""
            raise EnvelopeError(
                "headers",
                f"not an NServiceBus message{looks}: no {MESSAGE_ID} header, on {exchange!r}",
            )
        message = _listed_type(header(headers, ENCLOSED_TYPES), entry, exchange)
        kind = entry.kinds[message]

        problems: list[str] = []
        state = decide(kind, saga_state(header(headers, "Saga"), problems))
        which = OPERATION_HEADERS[entry.operation_id or DEFAULT_OPERATION_ID]
        user_header = entry.user_header or DEFAULT_USER_HEADER
        user = header_user(header(headers, user_header), f"headers.{user_header}", problems)
        sent_at = _time_sent(header(headers, TIME_SENT), problems)

        code = reason = None
        body = delivered.body
        if len(body) > max_bytes:
            problems.append(f"body: {len(body)} bytes exceeds the limit of {max_bytes}, not read")
        elif state is State.REJECTED:
            fields: Mapping[str, Any] = folded(json_object(body, "body", problems))
            code, reason = rejection(fields, "body", problems)

        return Envelope(
            message=message,
            exchange=exchange,
            kind=kind,
            state=state,
            operation_id=_id(headers, which, operation_id),
            message_id=own_id,
            user_id=user,
            name=snake_case(message),
            code=code,
            reason=reason,
            sent_at=sent_at,
            problems=tuple(problems),
        )

    def recognises(self, delivered: Delivered) -> bool:
        headers = delivered.headers or {}
        return (
            header(headers, MESSAGE_ID) is not None and header(headers, ENCLOSED_TYPES) is not None
        )


def exchange_of(type_name: str) -> str:
    """The fanout exchange NServiceBus publishes ``type_name`` to: ``Type.Namespace + ":" +
    Type.Name``, where a nested type's ``Name`` is its own (``Ns.Outer+Inner``: ``Ns:Inner``)."""
    namespace, _, short = type_name.rpartition(".")
    return f"{namespace}:{short.rpartition('+')[2]}"


def full_names(enclosed: str) -> Iterator[str]:
    """The full names of ``NServiceBus.EnclosedMessageTypes``' assembly-qualified names, in order.

    A generic's name holds its arguments' own assembly-qualified names in brackets
    (``Ns.Envelope`1[[Ns.Order, Shop, Version=1.0.0.0, ...]], Shop, ...``), so a name ends at the
    first comma outside brackets."""
    for qualified in enclosed.split(";"):
        if "[" in qualified:
            name = qualified[: _end_of_name(qualified)].strip()
        else:
            name = qualified.partition(",")[0].strip()
        if name:
            yield name


def _end_of_name(qualified: str) -> int:
    depth = 0
    for at, char in enumerate(qualified):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            return at
    return len(qualified)


def _listed_type(raw: Any, entry: Entry, exchange: str) -> str:
    enclosed = as_text(raw) or ""
    for name in full_names(enclosed):
        if name in entry.kinds:
            return name
    names = ", ".join(full_names(enclosed))
    if not names:
        raise EnvelopeError(
            "headers", f"no {ENCLOSED_TYPES}: the message's type is unknown (on {exchange!r})"
        )
    raise EnvelopeError(
        "headers",
        f"{ENCLOSED_TYPES}: none of {names[:300]!r} on {exchange!r} is in the catalogue",
    )


def _id_text(headers: Mapping[str, Any], name: str) -> str | None:
    raw = header(headers, name)
    if raw is None:
        return None
    text = as_text(raw)
    if text is None:
        raise EnvelopeError(f"headers.{name}", "expected UTF-8 text")
    return text.strip()


def _id(
    headers: Mapping[str, Any], name: str, read: Callable[[str | None], str | None]
) -> str | None:
    """The id in header ``name`` through the shared reader ``read``, its errors naming the
    header."""
    try:
        return read(_id_text(headers, name))
    except EnvelopeError as error:
        raise EnvelopeError(f"headers.{name}", str(error).partition(": ")[2]) from None


def _time_sent(raw: Any, problems: list[str]) -> dt.datetime | None:
    if raw is None:
        return None
    text = as_text(raw)
    found = TIME.fullmatch(text.strip()) if text is not None else None
    if found is not None:
        try:
            year, month, day, hour, minute, second, micro = map(int, found.groups())
            return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.UTC)
        except ValueError:
            pass
    problems.append(f"headers.{TIME_SENT}: not a time as 'yyyy-MM-dd HH:mm:ss:ffffff Z'")
    return None


FORMAT = NServiceBus()
