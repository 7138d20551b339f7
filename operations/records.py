"""The operation record, and the result of applying one message to it (contract §3).

:class:`Operation` is the record's one definition. The store reads its hash fields into it, the
change stream's snapshots decode straight into it, the HTTP routes answer it as it is, and the
OpenAPI document describes it. ``lua/apply.lua`` writes the same fields, in the same order, to
the hash and the snapshot (``tests/test_records.py`` holds it to that)."""

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
    def from_fields(cls, operation_id: str, values: list[bytes | None]) -> Operation | None:
        """The record from its hash's values, read in the order of :data:`STORED_FIELDS`; None
        when the hash holds no record (no state). The hash keeps an empty string for null, and
        not the id, which its key names."""
        if values[_STATE] is None:
            return None
        document: dict[str, str | None] = {
            field: None if value is None or (not value and field in _NULLABLE) else value.decode()
            for field, value in zip(STORED_FIELDS, values, strict=True)
        }
        document["id"] = operation_id
        return msgspec.convert(document, cls, strict=False)


RECORD_FIELDS: tuple[str, ...] = Operation.__struct_encode_fields__
"""The record's fields as sent (camelCase), in the struct's order."""

STORED_FIELDS: tuple[str, ...] = tuple(field for field in RECORD_FIELDS if field != "id")
"""The record's fields as its hash stores them: all but the id, in the struct's order."""

_STATE = STORED_FIELDS.index("state")


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


_NULLABLE = _nullable(Operation)
_snapshots = msgspec.json.Decoder(Operation)


# The record hash's history parts, named ``<version><letter>`` by apply.lua.
_PARTS = {"s": "state", "n": "name", "m": "message", "c": "code", "r": "reason", "a": "at"}
_PARTS["t"] = "sentAt"


def history_of(fields: dict[bytes, bytes], most: int) -> list[dict[str, Any]]:
    """An operation's history, oldest first, its newest ``most`` entries, from the record hash's
    ``fields`` as apply.lua writes them."""
    entries: dict[int, dict[str, Any]] = {}
    parts: dict[int, dict[str, str]] = {}
    message_ids: dict[int, str] = {}
    for name, value in fields.items():
        if name[:1].isdigit():
            version, part = int(name[:-1]), _PARTS.get(name[-1:].decode())
            if part is not None:
                parts.setdefault(version, {})[part] = value.decode()
        elif name.startswith(b"m:") and value:
            message_ids[int(value)] = name[2:].decode()
    # The first entry's time is the record's createdAt; the newest one's time is its updatedAt,
    # and its name the record's name.
    times = {1: fields.get(b"createdAt", b"").decode()}
    names = {}
    if b"version" in fields:
        newest = int(fields[b"version"])
        times[newest] = fields.get(b"updatedAt", b"").decode()
        names[newest] = fields.get(b"name", b"").decode()
    for version, found in parts.items():
        at = found.get("at") or times.get(version)
        if "state" in found and "message" in found and at:
            entries[version] = {
                "version": version,
                "state": found["state"],
                "name": found.get("name") or names.get(version) or found["message"],
                "message": found["message"],
                "messageId": message_ids.get(version),
                "code": found.get("code"),
                "reason": found.get("reason"),
                "at": at,
                "sentAt": found.get("sentAt"),
            }
    return [entries[version] for version in sorted(entries)][-most:]


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
