"""The message catalogue: which messages to subscribe to, on which exchange, and of what kind.

The file has the shape of Pacco's ``messages.json``: for each service an ``exchange`` and the lists
``commands``, ``events`` and ``rejectedEvents`` of snake_case message names (the routing keys).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from operations.errors import CatalogueError
from operations.states import MessageKind

_LISTS = {
    "commands": MessageKind.COMMAND,
    "events": MessageKind.EVENT,
    "rejectedEvents": MessageKind.REJECTED_EVENT,
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]*")


@dataclass(frozen=True)
class Subscription:
    exchange: str
    message: str
    kind: MessageKind


class Catalogue:
    def __init__(self, subscriptions: list[Subscription]) -> None:
        self._by_route = {(s.exchange, s.message): s for s in subscriptions}
        self._by_message: dict[str, Subscription] = {}
        for subscription in subscriptions:
            self._by_message.setdefault(subscription.message, subscription)

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
        subscriptions: list[Subscription] = []
        for service, entry in document.items():
            where = f"{source}: service {service!r}"
            if not isinstance(entry, dict) or not isinstance(entry.get("exchange"), str):
                raise CatalogueError(f"{where} needs a string 'exchange'")
            exchange = entry["exchange"]
            if not _NAME.fullmatch(exchange):
                raise CatalogueError(f"{where} has an invalid exchange name {exchange!r}")
            for key, kind in _LISTS.items():
                names = entry.get(key, [])
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise CatalogueError(f"{where}: '{key}' must be a list of strings")
                for name in names:
                    if not _NAME.fullmatch(name):
                        raise CatalogueError(f"{where}: invalid message name {name!r}")
                    subscriptions.append(Subscription(exchange, name, kind))
        if not subscriptions:
            raise CatalogueError(f"{source}: lists no messages")
        return cls(subscriptions)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._by_route.values())

    def __len__(self) -> int:
        return len(self._by_route)

    @property
    def exchanges(self) -> list[str]:
        return sorted({s.exchange for s in self._by_route.values()})

    def lookup(self, exchange: str, message: str) -> Subscription | None:
        return self._by_route.get((exchange, message)) or self._by_message.get(message)
