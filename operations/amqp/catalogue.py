"""The message catalogue: which messages to subscribe to, where they arrive, of what kind, and in
which bus's wire format.

The file has the shape of Pacco's ``messages.json``: for each service the lists ``commands``,
``events`` and ``rejectedEvents`` of the types it publishes, a ``format`` (contract §16; Convey's
when absent) and that format's options (``exchange`` for Convey and CloudEvents). Each format
(:mod:`operations.formats`) checks its entries, says what the queue binds to, and reads the
messages that arrive through those bindings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from operations.envelope import Delivered, Envelope
from operations.errors import CatalogueError, EnvelopeError
from operations.formats import DEFAULT_FORMAT, FORMATS
from operations.states import MessageKind
from operations.wire import OPTIONS, Binding, Entry, WireFormat

_LISTS = {
    "commands": MessageKind.COMMAND,
    "events": MessageKind.EVENT,
    "rejectedEvents": MessageKind.REJECTED_EVENT,
}
_CONVEY = FORMATS[DEFAULT_FORMAT]


@dataclass(frozen=True)
class Subscription:
    """One listed type: where it arrives (a Convey message: its exchange, its name the routing
    key), and its kind."""

    exchange: str
    message: str
    kind: MessageKind
    format: str = DEFAULT_FORMAT


class Catalogue:
    def __init__(self, entries: list[Entry], source: str = "catalogue") -> None:
        self.entries = entries
        self._subscriptions: dict[tuple[str, str], Subscription] = {}
        self._by_message: dict[str, Subscription] = {}
        self._readers: dict[str, tuple[WireFormat, Entry]] = {}
        self._bindings: dict[Binding, None] = {}
        self._others = [(FORMATS[e.format], e) for e in entries if e.format != DEFAULT_FORMAT]
        kinds: dict[str, tuple[str, Binding]] = {}
        conveyed: dict[str, dict[str, MessageKind]] = {}
        for entry in entries:
            wire = FORMATS[entry.format]
            bindings = wire.bindings(entry)
            for binding in bindings:
                self._bindings.setdefault(binding)
                claimed = kinds.setdefault(binding.exchange, (entry.service, binding))
                if claimed[1].kind is not binding.kind:
                    raise CatalogueError(
                        f"{source}: exchange {binding.exchange!r} is a {binding.kind} exchange"
                        f" for service {entry.service!r} but a {claimed[1].kind} one for"
                        f" service {claimed[0]!r}"
                    )
            if wire is _CONVEY:
                assert entry.exchange is not None  # checked
                conveyed.setdefault(entry.exchange, {}).update(entry.kinds)
                exchanges = [entry.exchange]
            else:
                exchanges = list(dict.fromkeys(binding.exchange for binding in bindings))
            for exchange in exchanges:
                reader = self._readers.get(exchange)
                if reader is not None and not (wire is _CONVEY and reader[0] is _CONVEY):
                    raise CatalogueError(
                        f"{source}: exchange {exchange!r} is read by service"
                        f" {reader[1].service!r} ({reader[1].format}) and by service"
                        f" {entry.service!r} ({entry.format}); give each its own exchange"
                    )
                self._readers[exchange] = (wire, entry)
            for name, kind in entry.kinds.items():
                at = entry.exchange if entry.exchange is not None else exchanges[0]
                subscription = Subscription(at, name, kind, entry.format)
                self._subscriptions[at, name] = subscription
                if wire is _CONVEY:
                    self._by_message.setdefault(name, subscription)
        # Several Convey services may share one exchange: it is read with all their names.
        for exchange, names in conveyed.items():
            merged = replace(self._readers[exchange][1], kinds=names)
            self._readers[exchange] = (_CONVEY, merged)

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CatalogueError(f"{path}: cannot be read as JSON ({error})") from None
        return cls.from_document(document, source=str(path))

    @classmethod
    def from_document(cls, document: object, source: str = "catalogue") -> Catalogue:
        if not isinstance(document, dict) or not document:
            raise CatalogueError(f"{source}: must be a non-empty JSON object of services")
        entries = [_entry(service, value, source) for service, value in document.items()]
        if not any(entry.kinds for entry in entries):
            raise CatalogueError(f"{source}: lists no messages")
        return cls(entries, source)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._subscriptions.values())

    def __len__(self) -> int:
        return len(self._subscriptions)

    @property
    def exchanges(self) -> list[str]:
        return sorted({binding.exchange for binding in self._bindings})

    @property
    def bindings(self) -> list[Binding]:
        """What the tracking queue binds to, each once, in the catalogue's order."""
        return list(self._bindings)

    def lookup(self, exchange: str, message: str) -> Subscription | None:
        """A Convey message by its exchange and name, or by its name alone."""
        found = self._subscriptions.get((exchange, message))
        if found is not None and found.format == DEFAULT_FORMAT:
            return found
        return self._by_message.get(message)

    def format_of(self, name: str) -> str | None:
        """The format of the entry listing the type ``name``, or None when none does."""
        for subscription in self._subscriptions.values():
            if subscription.message == name:
                return subscription.format
        return None

    def read(self, delivered: Delivered, max_bytes: int) -> Envelope:
        """``delivered`` read in the format of the entry whose exchange it arrived on. On any
        other exchange, a Convey message is found by its name alone (a copy sent back through
        the default exchange, a publisher's own exchange), and another bus's by its marks and
        its type (a type published as another, through the bus's exchange-to-exchange
        bindings). Raises :class:`EnvelopeError` when it cannot be read."""
        exchange = delivered.exchange or ""
        reader = self._readers.get(exchange)
        if reader is not None:
            wire, entry = reader
            if wire is not _CONVEY or (delivered.routing_key or "") in entry.kinds:
                return wire.read(delivered, entry, max_bytes)
        message = delivered.routing_key or ""
        subscription = self._by_message.get(message)
        if subscription is not None:
            return _CONVEY.read(delivered, self._readers[subscription.exchange][1], max_bytes)
        refusal: EnvelopeError | None = None
        for wire, entry in self._others:
            if wire.recognises(delivered):
                try:
                    return wire.read(delivered, entry, max_bytes)
                except EnvelopeError as error:
                    refusal = refusal or error
        if refusal is not None:
            raise refusal
        raise EnvelopeError(
            "routing_key", f"{message!r} on exchange {exchange!r} is not in the catalogue"
        )


def _entry(service: str, value: object, source: str) -> Entry:
    where = f"{source}: service {service!r}"
    if not isinstance(value, dict):
        raise CatalogueError(
            f"{where} must be an object: its lists, and an 'exchange' or a 'format'"
        )
    format_name = value.get("format", DEFAULT_FORMAT)
    wire = FORMATS.get(format_name) if isinstance(format_name, str) else None
    if wire is None:
        raise CatalogueError(
            f"{where}: unknown format {format_name!r}; one of {', '.join(sorted(FORMATS))}"
        )
    kinds: dict[str, MessageKind] = {}
    for key, kind in _LISTS.items():
        names = value.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CatalogueError(f"{where}: '{key}' must be a list of strings")
        for name in names:
            kinds[name] = kind
    options: dict[str, Any] = {}
    for option, attribute in OPTIONS.items():
        if option not in value:
            continue
        if option not in wire.options:
            raise CatalogueError(f"{where}: '{option}' does not apply to the {wire.name} format")
        options[attribute] = _option(option, value[option], where)
    entry = Entry(service, wire.name, kinds, **options)
    problem = wire.check(entry)
    if problem is not None:
        raise CatalogueError(f"{where} {problem}")
    return entry


def _option(option: str, value: object, where: str) -> object:
    if option == "routingKeys":
        if not isinstance(value, list) or not all(
            isinstance(key, str) and 0 < len(key.encode()) <= 255 for key in value
        ):
            raise CatalogueError(f"{where}: 'routingKeys' must be a list of routing keys")
        return tuple(value)
    if not isinstance(value, str):
        raise CatalogueError(f"{where} needs a string '{option}'")
    return value
