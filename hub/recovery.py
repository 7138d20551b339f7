"""Recovery after a reconnect: the operations that changed after a client's last cursor, read back
from the change stream, or word that the cursor is too old to recover from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from operations.identity import Principal

_CURSOR = re.compile(r"(\d{1,20})-(\d{1,20})")
_CHUNK = 1_000


@dataclass(frozen=True)
class Sync:
    operations: list[dict[str, Any]]
    cursor: str
    recovered: bool

    def to_json(self) -> dict[str, Any]:
        return {"operations": self.operations, "cursor": self.cursor, "recovered": self.recovered}


def parse_cursor(cursor: str) -> tuple[int, int] | None:
    match = _CURSOR.fullmatch(cursor)
    return (int(match[1]), int(match[2])) if match else None


async def changes_since(
    redis: aioredis.Redis, stream: str, since: str, until: str, principal: Principal
) -> Sync:
    """The latest snapshot of each operation the principal may see that changed in the stream
    after ``since`` and up to ``until`` (inclusive), oldest change first."""
    after, upto = parse_cursor(since), parse_cursor(until)
    if after is None or upto is None or after > upto:
        return Sync([], until, False)
    if after < upto and not await _still_whole(redis, stream, after):
        return Sync([], until, False)

    latest: dict[str, dict[str, Any]] = {}
    start = f"({since}"
    while True:
        entries: Any = await redis.xrange(stream, min=start, max=until, count=_CHUNK)
        for entry_id, fields in entries:
            record: dict[str, Any] = orjson.loads(fields[b"op"])
            if principal.may_read(record.get("userId") or ""):
                record["cursor"] = entry_id.decode()
                latest.pop(record["id"], None)
                latest[record["id"]] = record
        if len(entries) < _CHUNK:
            break
        start = f"({entries[-1][0].decode()}"
    return Sync(list(latest.values()), until, True)


async def _still_whole(redis: aioredis.Redis, stream: str, after: tuple[int, int]) -> bool:
    """True when no entry after ``after`` can have been trimmed or deleted from the stream."""
    try:
        info: Any = await redis.xinfo_stream(stream)
    except aioredis.ResponseError:  # no stream yet: nothing was ever trimmed
        return True
    deleted = _cursor_of(info.get("max-deleted-entry-id"))
    if deleted is not None and deleted > after:
        return False
    first = info.get("first-entry")
    first_id = _cursor_of(first[0]) if first else None
    if first_id is not None and first_id <= after:
        return True
    added = info.get("entries-added")
    return added is not None and int(added) == int(info.get("length", 0))


def _cursor_of(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    return parse_cursor(value.decode() if isinstance(value, bytes) else str(value))
