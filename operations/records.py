"""The operation record, and the result of applying one message to it (contract §3).

:class:`Operation` is the record's one definition. The store reads its hash fields into it, the
change stream's snapshots decode straight into it, the HTTP routes answer it as it is, and the
OpenAPI document describes it. ``lua/apply.lua`` writes the same fields, in the same order, to
the hash (under the short names of :mod:`operations.store.layout`) and the snapshot
(``tests/test_records.py`` holds it to that)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from operations.states import State
from operations.timestamps import Timestamp


class Operation(msgspec.Struct, rename="camel", frozen=True, gc=False):
    """An operation's record (Pacco's OperationDto and more); every field is always present.
    Times are RFC 3339 in UTC with milliseconds (:mod:`operations.timestamps`)."""

    id: str
    user_id: str | None
    name: str
    state: State
    code: str | None
    reason: str | None
    version: Annotated[int, Meta(ge=1)]
    created_at: Timestamp
    updated_at: Timestamp

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @classmethod
    def from_snapshot(cls, snapshot: bytes | str) -> Operation:
        """The record from its snapshot, the JSON apply.lua writes to the change stream."""
        return _snapshots.decode(snapshot)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Operation:
        """The record from a document of its fields (times as RFC 3339), as the store reads it."""
        return msgspec.convert(document, cls, strict=False)


RECORD_FIELDS: tuple[str, ...] = Operation.__struct_encode_fields__
"""The record's fields as sent (camelCase), in the struct's order."""


def _nullable(model: type[msgspec.Struct]) -> frozenset[str]:
    """The fields of ``model`` that may be null."""
    described = msgspec.inspect.type_info(model)
    assert isinstance(described, msgspec.inspect.StructType)
    return frozenset(
        field.encode_name
        for field in described.fields
        if isinstance(field.type, msgspec.inspect.UnionType)
        and any(isinstance(member, msgspec.inspect.NoneType) for member in field.type.types)
    )


NULLABLE = _nullable(Operation)
"""The record's fields that may be null (camelCase)."""
_snapshots = msgspec.json.Decoder(Operation)


class ApplyOutcome(StrEnum):
    """What applying one message did to its operation."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class Change:
    """The result of one apply. ``snapshot`` (the record as JSON) and ``cursor`` (its entry in the
    change stream) are set only when the change was applied."""

    outcome: ApplyOutcome
    operation_id: str
    snapshot: bytes | None = None
    cursor: str | None = None

    @property
    def record(self) -> Operation | None:
        return None if self.snapshot is None else Operation.from_snapshot(self.snapshot)
