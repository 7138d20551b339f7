"""Business keys: the fields of a saga's data an operator finds it by (an order id, a customer
id), declared by its type (``business_keys = ("order_id", "customer_id")``).

A key's value is indexed as text: a string, a whole number, or each item of a list of them.
Empty strings, other types and values over :data:`MAX_VALUE_CHARS` are not indexed, and at
most :data:`MAX_VALUES` values a saga are, so one saga's index entries stay bounded whatever its
data holds. ``GET /sagas?key=<value>`` finds the sagas holding the value in any of their keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from operations.sagas.saga import Saga

MAX_VALUE_CHARS = 200
MAX_VALUES = 32


def _texts(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    texts = []
    for item in items:
        if isinstance(item, bool):
            continue
        text = str(item) if isinstance(item, int) else item
        if isinstance(text, str) and 0 < len(text) <= MAX_VALUE_CHARS:
            texts.append(text)
    return texts


def key_fields(saga_type: type[Saga[Any]], data: Mapping[str, Any]) -> dict[str, Any]:
    """The type's business keys that this data sets, by field name, as stored."""
    return {name: data[name] for name in saga_type.business_keys if _texts(data.get(name))}


def key_values(saga_type: type[Saga[Any]], data: Mapping[str, Any]) -> list[str]:
    """The values the saga is indexed under: each distinct one once, at most MAX_VALUES."""
    found: dict[str, None] = {}
    for name in saga_type.business_keys:
        for text in _texts(data.get(name)):
            found[text] = None
    return list(found)[:MAX_VALUES]
