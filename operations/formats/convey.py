"""Convey's format: Pacco's services and anything that publishes the way they do.

A topic exchange per service; the routing key is the message's snake_case name, the AMQP
``correlation_id`` the operation id, ``message_id`` the message's id, and a JSON
``message_context`` header names the user and the operation. A rejected event's body carries
``reason`` and ``code``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from operations.envelope import (
    Delivered,
    Envelope,
    context_user,
    folded,
    header,
    json_object,
    message_context,
    message_id,
    operation_id,
    rejection,
    saga_state,
    text_field,
)
from operations.errors import EnvelopeError
from operations.states import State, decide
from operations.wire import Binding, Entry, ExchangeKind, written_by

NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]*")
"""What an exchange and a message name may be."""


class Convey:
    name = "convey"
    options = frozenset({"exchange"})

    def check(self, entry: Entry) -> str | None:
        if entry.exchange is None:
            return "needs a string 'exchange'"
        if not NAME.fullmatch(entry.exchange):
            return f"has an invalid exchange name {entry.exchange!r}"
        for name in entry.kinds:
            if not NAME.fullmatch(name):
                return f"invalid message name {name!r}"
        return None

    def bindings(self, entry: Entry) -> list[Binding]:
        assert entry.exchange is not None  # checked
        return [Binding(entry.exchange, ExchangeKind.TOPIC, name) for name in entry.kinds]

    def read(self, delivered: Delivered, entry: Entry, max_bytes: int) -> Envelope:
        exchange = delivered.exchange or ""
        message = delivered.routing_key or ""
        kind = entry.kinds.get(message)
        if kind is None:
            raise EnvelopeError(
                "routing_key", f"{message!r} on exchange {exchange!r} is not in the catalogue"
            )
        foreign = written_by(delivered, (self.name,))
        if foreign is not None:
            raise EnvelopeError(
                "format", f"{foreign} on {exchange!r}, which the catalogue lists as Convey's"
            )

        problems: list[str] = []
        headers = delivered.headers or {}
        context = folded(message_context(headers, max_bytes, problems))
        state = decide(kind, saga_state(header(headers, "Saga"), problems))
        user = context_user(context, problems)
        name = text_field(context, "name", "message_context.name", problems) or message

        body = delivered.body
        if len(body) > max_bytes:
            problems.append(f"body: {len(body)} bytes exceeds the limit of {max_bytes}, not read")
            fields: Mapping[str, Any] = {}
        else:
            fields = folded(json_object(body, "body", problems))

        trace_id = context.get("traceid")
        code = reason = None
        if state is State.REJECTED:
            code, reason = rejection(fields, "body", problems)

        return Envelope(
            message=message,
            exchange=exchange,
            kind=kind,
            state=state,
            operation_id=operation_id(delivered.correlation_id),
            message_id=message_id(delivered.message_id),
            user_id=user,
            name=name,
            code=code,
            reason=reason,
            sent_at=delivered.timestamp,
            problems=tuple(problems),
            trace_id=trace_id if isinstance(trace_id, str) else None,
        )

    def recognises(self, delivered: Delivered) -> bool:
        """Never: a Convey message on another exchange is found by its name alone."""
        return False


FORMAT = Convey()
