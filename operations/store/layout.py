"""The record hash's layout, as ``lua/apply.lua`` writes it and the store reads it back: short
field names, and compact forms of ids and times, so that the hash of a usual operation stays a
small listpack (docs/performance.md, "Redis bytes per operation").

- The record's own fields are one letter each (:data:`FIELDS`). Times are integers, which a
  listpack stores in a few bytes: ``createdAt`` and the history's times in milliseconds since
  the epoch, ``updatedAt`` in milliseconds after ``createdAt``; they are shown as RFC 3339 on
  the way out.
- The owner's id is :func:`operations.store.keys.pack_id`'s form: a GUID in its one spelling
  as its 16 bytes, like the operation's in its key's name and in the indexes.
- A message id seen is a field named by :func:`message_field`: a GUID in either of its two
  usual lower-case spellings as a tag byte (one per spelling) and its 16 bytes, any other id as
  ``m:`` and its text; so the same string always names the same field, and different strings
  different fields.
- The history: a ``<version>`` field (the message name), and when needed ``<version><letter>``
  fields (``n`` name, ``c`` code, ``r`` reason, ``t`` sent at, ``a`` at). The newest entry's
  state, name and time are the record's, and every other entry's state is pending (a change to
  any other state is final); the first entry's time is ``createdAt``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from operations.records import NULLABLE, RECORD_FIELDS, Operation
from operations.store.keys import guid_bytes, hyphenated, unpack_id
from operations.timestamps import rfc3339

FIELDS: dict[str, str] = {
    "userId": "u",
    "name": "n",
    "state": "s",
    "code": "c",
    "reason": "r",
    "version": "v",
    "createdAt": "b",
    "updatedAt": "t",
}
"""Each stored field of :class:`Operation` (all but the id, which the key names), by its name
in the hash."""

STORED: tuple[str, ...] = tuple(FIELDS[name] for name in RECORD_FIELDS if name != "id")
"""The hash's names of the record's fields, in the struct's order (what a read asks for)."""

_STORED_NAMES = tuple(name for name in RECORD_FIELDS if name != "id")
_NULLABLE = NULLABLE
_STATE = _STORED_NAMES.index("state")
_CREATED = _STORED_NAMES.index("createdAt")
_DIGITS_ONLY = re.compile(r"[0-9a-f]{32}")
# A message id's field: its spelling's tag, then the GUID's 16 bytes.
_TAG_HYPHENATED, _TAG_DIGITS = b"\x01", b"\x02"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def message_field(message_id: str) -> bytes:
    """The record's field that says ``message_id`` was seen."""
    guid = guid_bytes(message_id)
    if guid is not None:
        return _TAG_HYPHENATED + guid
    if len(message_id) == 32 and _DIGITS_ONLY.fullmatch(message_id):
        return _TAG_DIGITS + bytes.fromhex(message_id)
    return b"m:" + message_id.encode()


def message_id_of(field: bytes) -> str | None:
    """The message id a field names, or None when it names none."""
    if field.startswith(b"m:"):
        return field[2:].decode()
    if len(field) == 17 and field[:1] == _TAG_HYPHENATED:
        return hyphenated(field[1:])
    if len(field) == 17 and field[:1] == _TAG_DIGITS:
        return field[1:].hex()
    return None


def milliseconds(moment: dt.datetime) -> int:
    """``moment`` as stored: whole milliseconds since the epoch (what RFC 3339 with
    milliseconds shows of it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def shown(stored: bytes | str | int) -> str:
    """A stored time (milliseconds since the epoch) in the one format of the answers."""
    return rfc3339(_EPOCH + dt.timedelta(milliseconds=int(stored)))


def operation_of(operation_id: str, values: list[bytes | None]) -> Operation | None:
    """The record from its hash's values, read in the order of :data:`STORED`; None when the
    hash holds no record (no state). An absent code or reason, or an owner of none, is null."""
    if values[_STATE] is None:
        return None
    document: dict[str, Any] = {"id": operation_id}
    created = int(values[_CREATED] or 0)
    for name, value in zip(_STORED_NAMES, values, strict=True):
        if value is None or (not value and name in _NULLABLE):
            document[name] = None
        elif name == "createdAt":
            document[name] = shown(created)
        elif name == "updatedAt":
            document[name] = shown(created + int(value))
        elif name == "userId":
            document[name] = unpack_id(value)
        else:
            document[name] = value.decode()
    return Operation.from_document(document)


_PARTS = {"n": "name", "c": "code", "r": "reason", "a": "at", "t": "sentAt"}


def history_of(fields: dict[bytes, bytes], most: int) -> list[dict[str, Any]]:
    """An operation's history, oldest first, its newest ``most`` entries, from the record
    hash's ``fields`` as apply.lua writes them."""
    entries: dict[int, dict[str, Any]] = {}
    parts: dict[int, dict[str, str]] = {}
    message_ids: dict[int, str] = {}
    for name, value in fields.items():
        if name.isdigit():
            parts.setdefault(int(name), {})["message"] = value.decode()
        elif name[:1].isdigit():
            version, part = int(name[:-1]), _PARTS.get(name[-1:].decode())
            if part is not None:
                text = value.decode()
                parts.setdefault(version, {})[part] = (
                    shown(text) if part in ("at", "sentAt") else text
                )
        elif value and (message_id := message_id_of(name)) is not None:
            message_ids[int(value)] = message_id
    # The first entry's time is the record's createdAt; the newest one's time, name and state
    # are the record's; every other entry's state is pending.
    times: dict[int, str] = {}
    newest, record_name, record_state = 0, "", ""
    if b"b" in fields and b"v" in fields and b"t" in fields:
        created = int(fields[b"b"])
        newest = int(fields[b"v"])
        times = {1: shown(created), newest: shown(created + int(fields[b"t"]))}
        record_name = fields.get(b"n", b"").decode()
        record_state = fields.get(b"s", b"").decode()
    for version, found in parts.items():
        at = found.get("at") or times.get(version)
        if version == newest:
            found.setdefault("record-name", record_name)
        state = record_state if version == newest else "pending"
        if state and "message" in found and at:
            entries[version] = {
                "version": version,
                "state": state,
                "name": found.get("name") or found.get("record-name") or found["message"],
                "message": found["message"],
                "messageId": message_ids.get(version),
                "code": found.get("code"),
                "reason": found.get("reason"),
                "at": at,
                "sentAt": found.get("sentAt"),
            }
    return [entries[version] for version in sorted(entries)][-most:]
