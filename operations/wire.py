"""What a wire format is: the seam between the catalogue and the readers of each bus's messages.

A message on RabbitMQ says what the pipeline needs (its operation id, its own id, its type, its
user, its time, a ``Saga`` state) in a way that depends on who published it. Each catalogue entry
names its ``format`` (contract §16); a :class:`WireFormat` for that name:

- checks the entry (:meth:`WireFormat.check`): its type names and options;
- says what the service's queue binds to (:meth:`WireFormat.bindings`);
- reads one delivered message of the entry into an :class:`~operations.envelope.Envelope`
  (:meth:`WireFormat.read`), or raises :class:`~operations.errors.EnvelopeError` naming what is
  wrong, and the message is dead-lettered with that reason;
- tells its own messages by their marks (:meth:`WireFormat.recognises`), for those that reach
  the queue through an exchange the bus bound to a listed type's.

The formats live in :mod:`operations.formats`, one module each. A new one is a module with a
``FORMAT`` object of this shape, listed in :data:`operations.formats.FORMATS`, and a test file.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from operations.envelope import Delivered, Envelope
from operations.states import MessageKind


class ExchangeKind(enum.StrEnum):
    TOPIC = "topic"
    FANOUT = "fanout"


@dataclass(frozen=True)
class Binding:
    """One binding of the service's queue: an exchange of a kind, and a routing key."""

    exchange: str
    kind: ExchangeKind
    routing_key: str = ""


@dataclass(frozen=True)
class Entry:
    """One service of the catalogue: its format, the types it lists by kind, and its options as
    written (None when absent; the format gives the default)."""

    service: str
    format: str
    kinds: Mapping[str, MessageKind] = field(hash=False)
    exchange: str | None = None
    operation_id: str | None = None
    user_header: str | None = None
    routing_keys: tuple[str, ...] | None = None

    @property
    def where(self) -> str:
        return f"service {self.service!r} ({self.format})"


OPTIONS = {
    "exchange": "exchange",
    "operationId": "operation_id",
    "userHeader": "user_header",
    "routingKeys": "routing_keys",
}
"""The options an entry may carry beside its lists, by their name in the file."""


class WireFormat(Protocol):
    """One bus's way of writing messages, as the service reads it."""

    @property
    def name(self) -> str:
        """The entry's ``format``."""

    @property
    def options(self) -> frozenset[str]:
        """The options of :data:`OPTIONS` (by their name in the file) it takes; an entry that
        gives any other is refused."""

    def check(self, entry: Entry) -> str | None:
        """What is wrong with ``entry``'s names or options, or None."""

    def bindings(self, entry: Entry) -> list[Binding]:
        """What the service's queue binds to for ``entry``."""

    def read(self, delivered: Delivered, entry: Entry, max_bytes: int) -> Envelope:
        """``delivered``, which came through one of ``entry``'s bindings, as an envelope; raises
        :class:`~operations.errors.EnvelopeError` when it cannot be read as this format's."""

    def recognises(self, delivered: Delivered) -> bool:
        """Whether ``delivered`` bears this format's own marks. Asked only of a message that
        arrived on an exchange no entry binds: a type published as another, whose exchange the
        bus bound to a listed type's (a subclass, an interface). One the format recognises is
        read with each of its entries in turn, until one lists its type."""


def snake_case(type_name: str) -> str:
    """A type's short name in snake_case, the operation's display name: ``Orders.OrderSubmitted``
    and ``Orders.Shop+OrderSubmitted`` both read ``order_submitted``."""
    short = re.split(r"[.+]", type_name)[-1]
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", short)
    return words.lower()


DOTNET_TYPE = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+(\+[A-Za-z_][A-Za-z0-9_]*)*"
)
"""A .NET full type name, ``Namespace.TypeName`` (a nested type: ``Namespace.Outer+Inner``)."""


def dotnet_exchange(type_name: str) -> str:
    """``Namespace:TypeName``, the fanout exchange MassTransit and NServiceBus publish a type
    ``Namespace.TypeName`` to; each names a nested type in its own way."""
    namespace, _, short = type_name.rpartition(".")
    return f"{namespace}:{short}"


_CONTENT_MARKS = (
    ("application/vnd.masstransit", "masstransit", "a MassTransit message"),
    ("application/cloudevents", "cloudevents", "a CloudEvent"),
)
_HEADER_MARKS = {
    "message_context": ("convey", "a Convey message"),
    "MT-MessageType": ("masstransit", "a MassTransit message"),
    "NServiceBus.MessageId": ("nservicebus", "an NServiceBus message"),
    "ce-specversion": ("cloudevents", "a CloudEvent"),
    "cloudEvents_specversion": ("cloudevents", "a CloudEvent"),
    "cloudEvents:specversion": ("cloudevents", "a CloudEvent"),
}


def written_by(delivered: Delivered, besides: tuple[str, ...]) -> str | None:
    """What other bus's message ``delivered`` is, by a mark only that bus sets (a content type, a
    header), leaving out the marks of the formats ``besides``; None when it bears none. Each
    format asks it, so that a message mis-sent to its exchange is refused, not misread."""
    content_type = delivered.content_type
    if content_type:
        lowered = content_type.lower()
        for prefix, bus, what in _CONTENT_MARKS:
            if bus not in besides and lowered.startswith(prefix):
                return what
    headers = delivered.headers
    if headers:
        for key, (bus, what) in _HEADER_MARKS.items():
            if bus not in besides and key in headers:
                return what
    return None


DOTNET_OPERATION_IDS = ("conversationId", "correlationId")
MAX_HEADER_NAME = 200


def check_dotnet_entry(entry: Entry) -> str | None:
    """What is wrong with an entry of a .NET bus (MassTransit, NServiceBus): its type names, its
    ``operationId`` and its ``userHeader``; None when nothing is."""
    for name in entry.kinds:
        if not DOTNET_TYPE.fullmatch(name):
            return f"invalid .NET type name {name!r}: expected Namespace.TypeName"
    if entry.operation_id is not None and entry.operation_id not in DOTNET_OPERATION_IDS:
        return (
            f"has an invalid 'operationId' {entry.operation_id!r}:"
            " 'conversationId' (the default) or 'correlationId'"
        )
    user = entry.user_header
    if user is not None and (
        not user.strip() or len(user) > MAX_HEADER_NAME or not user.isprintable()
    ):
        return f"has an invalid 'userHeader' {user!r}: a header name"
    return None
