"""The record hash's layout, as ``lua/apply.lua`` writes it and the store reads it back: short
field names, and compact forms of ids and times, so that the hash of a usual operation stays a
small listpack (docs/performance.md, "Redis bytes per operation").

- The record's own fields are one letter each (:data:`FIELDS`). Times (``createdAt``,
  ``updatedAt``, the history's times) are integers, milliseconds since the epoch, which a
  listpack stores in a few bytes; they are shown as RFC 3339 on the way out.
- The owner's id is :func:`pack_id`'s form: a GUID in its one spelling as its 16 bytes.
- A message id seen is a field named by :func:`message_field`: a GUID in either of its two
  usual lower-case spellings as a tag byte (one per spelling) and its 16 bytes, any other id as
  ``m:`` and its text; so the same string always names the same field, and different strings
  different fields.
- The history: ``<version><letter>`` fields (``s`` state, ``m`` message, ``n`` name, ``c`` code,
  ``r`` reason, ``t`` sent at, ``a`` at). The newest entry's state, name and time are the
  record's; the first entry's time is ``createdAt``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from operations.records import NULLABLE, RECORD_FIELDS, Operation
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
_TIMES = frozenset({"createdAt", "updatedAt"})
_NULLABLE = NULLABLE
_STATE = _STORED_NAMES.index("state")
_HYPHENATED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DIGITS_ONLY = re.compile(r"[0-9a-f]{32}")
# A message id's field: its spelling's tag, then the GUID's 16 bytes.
_TAG_HYPHENATED, _TAG_DIGITS = b"\x01", b"\x02"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def pack_id(text: str) -> bytes:
    """An id as stored: a GUID in its one spelling (lower case, hyphenated) as its 16 bytes;
    any other id as its UTF-8 text, after a zero byte when that text is 16 bytes long (ids are
    printable, so none starts with one)."""
    if len(text) == 36 and _HYPHENATED.fullmatch(text):
        return uuid.UUID(text).bytes
    data = text.encode()
    return b"\x00" + data if len(data) == 16 else data


def unpack_id(data: bytes) -> str:
    if len(data) == 16:
        return str(uuid.UUID(bytes=data))
    if data[:1] == b"\x00":
        return data[1:].decode()
    return data.decode()


def message_field(message_id: str) -> bytes:
    """The record's field that says ``message_id`` was seen."""
    if len(message_id) == 36 and _HYPHENATED.fullmatch(message_id):
        return _TAG_HYPHENATED + uuid.UUID(message_id).bytes
    if len(message_id) == 32 and _DIGITS_ONLY.fullmatch(message_id):
        return _TAG_DIGITS + bytes.fromhex(message_id)
    return b"m:" + message_id.encode()


def message_id_of(field: bytes) -> str | None:
    """The message id a field names, or None when it names none."""
    if field.startswith(b"m:"):
        return field[2:].decode()
    if len(field) == 17 and field[:1] == _TAG_HYPHENATED:
        return str(uuid.UUID(bytes=field[1:]))
    if len(field) == 17 and field[:1] == _TAG_DIGITS:
        return field[1:].hex()
    return None


def milliseconds(moment: dt.datetime) -> int:
    """``moment`` as stored: whole milliseconds since the epoch (what RFC 3339 with
    milliseconds shows of it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def shown(stored: bytes | str) -> str:
    """A stored time (milliseconds since the epoch) in the one format of the answers."""
    return rfc3339(_EPOCH + dt.timedelta(milliseconds=int(stored)))


def operation_of(operation_id: str, values: list[bytes | None]) -> Operation | None:
    """The record from its hash's values, read in the order of :data:`STORED`; None when the
    hash holds no record (no state). An absent code or reason, or an owner of none, is null."""
    if values[_STATE] is None:
        return None
    document: dict[str, Any] = {"id": operation_id}
    for name, value in zip(_STORED_NAMES, values, strict=True):
        if value is None or (not value and name in _NULLABLE):
            document[name] = None
        elif name in _TIMES:
            document[name] = shown(value)
        elif name == "userId":
            document[name] = unpack_id(value)
        else:
            document[name] = value.decode()
    return Operation.from_document(document)


_PARTS = {"s": "state", "n": "name", "m": "message", "c": "code", "r": "reason", "a": "at"}
_PARTS["t"] = "sentAt"


def history_of(fields: dict[bytes, bytes], most: int) -> list[dict[str, Any]]:
    """An operation's history, oldest first, its newest ``most`` entries, from the record
    hash's ``fields`` as apply.lua writes them."""
    entries: dict[int, dict[str, Any]] = {}
    parts: dict[int, dict[str, str]] = {}
    message_ids: dict[int, str] = {}
    for name, value in fields.items():
        if name[:1].isdigit():
            version, part = int(name[:-1]), _PARTS.get(name[-1:].decode())
            if part is not None:
                text = value.decode()
                parts.setdefault(version, {})[part] = (
                    shown(text) if part in ("at", "sentAt") else text
                )
        elif value and (message_id := message_id_of(name)) is not None:
            message_ids[int(value)] = message_id
    # The first entry's time is the record's createdAt; the newest one's time, name and state
    # are the record's.
    times: dict[int, str] = {}
    if b"b" in fields:
        times[1] = shown(fields[b"b"])
    newest: dict[str, str] = {}
    if b"v" in fields:
        version = int(fields[b"v"])
        if b"t" in fields:
            times[version] = shown(fields[b"t"])
        newest = {"name": fields.get(b"n", b"").decode(), "state": fields.get(b"s", b"").decode()}
        parts.setdefault(version, {})
        for part, text in newest.items():
            parts[version].setdefault(f"record-{part}", text)
    for version, found in parts.items():
        at = found.get("at") or times.get(version)
        state = found.get("state") or found.get("record-state")
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
