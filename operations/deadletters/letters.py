"""A dead letter as the workbench keeps it, captured from a message taken off a dead-letter
queue, and the JSON documents of its HTTP API (contract §9), as msgspec Structs.

What the capture reads:

- the service's own dead-letter headers (:mod:`operations.amqp.copies`): the reason, the
  disposition, the time, the original exchange and routing key, and the stable id stamped on each
  copy;
- for a message the broker dead-lettered itself (a quorum queue's delivery limit), ``x-death``;
- the ``x-redriven`` header, which counts the redrives the message has been through.

Header values keep their AMQP types on the wire side (:func:`wire_headers`), so a redrive
publishes them as they came, bytes as bytes; the API shows them as JSON (:func:`shown`).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import Meta

from operations.amqp.copies import (
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DISPOSITION_HEADER,
    EXCHANGE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
)
from operations.envelope import header_text
from operations.timestamps import Timestamp, rfc3339
from operations.timestamps import shown as shown_time

REDRIVEN_HEADER = "x-redriven"
MAX_PAGE = 200  # dead letters in one page of GET /dead-letters
DEFAULT_PAGE = 50
MAX_BODY = 4_096  # bytes of a group request's body
_BOOKKEEPING = ("x-operations-", "x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


class DeadLetterItem(msgspec.Struct, rename="camel"):
    """One dead letter, as ``GET /dead-letters`` and ``GET /dead-letters/{id}`` show it. Times
    are RFC 3339 in UTC with milliseconds (:mod:`operations.timestamps`), the message's
    ``timestamp`` property included."""

    id: str
    queue: str
    exchange: str
    routing_key: str
    reason: str
    disposition: str
    correlation_id: str | None
    message_id: str | None
    dead_lettered_at: Timestamp
    attempts: int
    headers: dict[str, Any]
    properties: dict[str, Any]
    body: str
    body_encoding: str
    body_bytes: int
    body_truncated: bool

    def __post_init__(self) -> None:
        # Letters kept by earlier versions hold ISO times with +00:00.
        self.dead_lettered_at = shown_time(self.dead_lettered_at)
        sent = self.properties.get("timestamp")
        if isinstance(sent, str):
            self.properties["timestamp"] = shown_time(sent)


class StoredLetter(msgspec.Struct, rename="camel"):
    """What Redis holds: the item, and the headers with their AMQP types for a redrive."""

    item: DeadLetterItem
    wire: dict[str, Any]
    at_ms: int

    @property
    def body_bytes(self) -> bytes:
        if self.item.body_encoding == "base64":
            return base64.b64decode(self.item.body)
        return self.item.body.encode("utf-8")


class DeadLetterPage(msgspec.Struct):
    items: list[DeadLetterItem]
    next: str | None


class DeadLetterGroup(msgspec.Struct):
    reason: str
    queue: str
    count: int
    first: Timestamp
    last: Timestamp


class DeadLetterGroups(msgspec.Struct):
    items: list[DeadLetterGroup]


class ListDeadLetters(msgspec.Struct):
    """The query of ``GET /dead-letters``."""

    queue: Annotated[str, Meta(description="Only this dead-letter queue's letters.")] | None = None
    reason: Annotated[str, Meta(description="Only letters with this reason.")] | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE
    cursor: Annotated[str, Meta(description="The `next` of the previous page.")] | None = None


class GroupQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /dead-letters/redrive`` and ``POST /dead-letters/discard``."""

    reason: str
    queue: str


class Redriven(msgspec.Struct):
    id: str
    redriven: bool


class GroupRedriven(msgspec.Struct):
    redriven: int
    skipped: int


class GroupDiscarded(msgspec.Struct):
    discarded: int


def capture(
    dead_letter_queue: str,
    headers: Mapping[str, Any] | None,
    properties: Mapping[str, Any],
    body: bytes,
    max_body_bytes: int,
    now: dt.datetime,
) -> StoredLetter:
    """The record of a message taken off ``dead_letter_queue``. Never raises on odd content:
    whatever cannot be read falls back to what the queue itself tells."""
    headers = dict(headers or {})
    # The service's own copy says everything; x-death matters only for a message the broker
    # dead-lettered itself (on a copy, it may tell of a pass through a retry queue instead).
    death = {} if REASON_HEADER in headers else _first_death(headers)
    origin_queue = header_text(death.get("queue")) or dead_letter_queue.removesuffix(".dead-letter")
    exchange = header_text(headers.get(EXCHANGE_HEADER))
    routing_key = header_text(headers.get(ROUTING_KEY_HEADER))
    if exchange is None:
        exchange = header_text(death.get("exchange")) or ""
        keys = death.get("routing-keys")
        first_key = header_text(keys[0]) if isinstance(keys, list) and keys else None
        routing_key = first_key or (origin_queue if not exchange else "")
    reason = header_text(headers.get(REASON_HEADER))
    if reason is None:
        cause = header_text(death.get("reason")) or "unknown"
        reason = f"dead-lettered by the broker: {cause.replace('_', ' ')}"
    disposition = header_text(headers.get(DISPOSITION_HEADER)) or (
        "delivery-limit" if header_text(death.get("reason")) == "delivery_limit" else "not-applied"
    )
    at = _time(headers.get(DEAD_LETTERED_AT_HEADER)) or _time(death.get("time")) or now
    wire = {key: value for key, value in headers.items() if not key.startswith(_BOOKKEEPING)}
    redrives = headers.get(REDRIVEN_HEADER)
    attempts = (redrives if isinstance(redrives, int) and not isinstance(redrives, bool) else 0) + 1
    letter_id = header_text(headers.get(DEAD_LETTER_ID_HEADER)) or _content_id(
        dead_letter_queue, headers, properties, body
    )
    kept = body[:max_body_bytes]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    item = DeadLetterItem(
        id=letter_id,
        queue=origin_queue,
        exchange=exchange,
        routing_key=routing_key or "",
        reason=reason,
        disposition=disposition,
        correlation_id=header_text(properties.get("correlation_id")),
        message_id=header_text(properties.get("message_id")),
        dead_lettered_at=rfc3339(at),
        attempts=attempts,
        headers={key: shown(value) for key, value in wire.items()},
        properties={key: shown(value) for key, value in properties.items() if value is not None},
        body=text,
        body_encoding=encoding,
        body_bytes=len(body),
        body_truncated=len(body) > max_body_bytes,
    )
    return StoredLetter(item, {key: tagged(value) for key, value in wire.items()}, _ms(at))


def group_key(queue: str, reason: str) -> str:
    return hashlib.sha1(f"{queue}\0{reason}".encode(), usedforsecurity=False).hexdigest()[:20]


def shown(value: Any) -> Any:
    """A header value as JSON: bytes as their UTF-8 text (or ``base64:...``), times as RFC 3339
    (:func:`~operations.timestamps.rfc3339`)."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): shown(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [shown(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def tagged(value: Any) -> Any:
    """A header value as JSON that keeps its AMQP type; :func:`untagged` reverses it."""
    if isinstance(value, bytearray):
        return {"$a": base64.b64encode(value).decode("ascii")}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"$d": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$n": str(value)}
    if isinstance(value, Mapping):
        return {"$t": {str(key): tagged(item) for key, item in value.items()}}
    if isinstance(value, list | tuple):
        return [tagged(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def untagged(value: Any) -> Any:
    if isinstance(value, list):
        return [untagged(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "$a" in value:
        return bytearray(base64.b64decode(value["$a"]))
    if "$b" in value:
        # A long string that is not UTF-8: pamqp can only send raw bytes as a byte array.
        return bytearray(base64.b64decode(value["$b"]))
    if "$d" in value:
        return dt.datetime.fromisoformat(value["$d"])
    if "$n" in value:
        return decimal.Decimal(value["$n"])
    return {key: untagged(item) for key, item in value.get("$t", {}).items()}


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def _content_id(
    queue: str, headers: Mapping[str, Any], properties: Mapping[str, Any], body: bytes
) -> str:
    """For a message the broker dead-lettered (no id stamped): the same for every redelivery of
    it, since a redelivery carries the same properties, headers (``x-death`` with its count and
    time included) and body."""
    digest = hashlib.sha256(queue.encode())
    digest.update(orjson.dumps(tagged(dict(headers)), option=orjson.OPT_SORT_KEYS))
    digest.update(orjson.dumps(tagged(dict(properties)), option=orjson.OPT_SORT_KEYS))
    digest.update(body)
    return "h" + digest.hexdigest()[:31]


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = header_text(value)
    if text is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)
