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
    scanned: int = 0  # stream entries read to build it
    too_far: bool = False  # given up: more than the limit of entries to read

    def to_json(self) -> dict[str, Any]:
        return {"operations": self.operations, "cursor": self.cursor, "recovered": self.recovered}


StreamId = tuple[int, int]


def parse_cursor(cursor: str, shards: int) -> list[StreamId] | None:
    """A cursor's stream position in each shard, or None if it is not a cursor of this layout."""
    parts = cursor.split(",")
    if len(parts) != shards:
        return None
    ids = []
    for part in parts:
        match = _CURSOR.fullmatch(part)
        if match is None:
            return None
        ids.append((int(match[1]), int(match[2])))
    return ids


def is_ahead(cursor: list[StreamId], position: list[StreamId]) -> bool:
    """True when the cursor is past the position in some shard (another process got further)."""
    return any(mine > theirs for mine, theirs in zip(cursor, position, strict=True))


async def changes_since(
    redis: aioredis.Redis,
    streams: list[str],
    since: str,
    until: str,
    principal: Principal,
    limit: int = 1 << 62,
) -> Sync:
    """The latest snapshot of each operation the principal may see that changed after ``since``
    and up to ``until`` (inclusive), oldest change first; each stream (shard) is read from its own
    position in the cursor. Past ``limit`` entries read (everyone's changes), it gives up:
    ``recovered`` false and ``too_far`` true."""
    after, upto = parse_cursor(since, len(streams)), parse_cursor(until, len(streams))
    if after is None or upto is None or is_ahead(after, upto):
        return Sync([], until, False)
    found: list[tuple[StreamId, dict[str, Any]]] = []
    scan = _Scan(limit)
    for stream, start, end in zip(streams, after, upto, strict=True):
        if start == end:
            continue
        if not await _still_whole(redis, stream, start):
            return Sync([], until, False, scan.scanned)
        found.extend(await _latest(redis, stream, start, end, principal, scan))
        if scan.too_far:
            return Sync([], until, False, scan.scanned, too_far=True)
    found.sort(key=lambda item: item[0])
    operations = [record for _, record in found]
    if len(streams) > 1:
        for record in operations:
            record["cursor"] = until  # a single stream's entry id is no cursor of this layout
    return Sync(operations, until, True, scan.scanned)


class _Scan:
    def __init__(self, limit: int) -> None:
        self.limit, self.scanned = limit, 0

    @property
    def too_far(self) -> bool:
        return self.scanned > self.limit

    def count(self) -> int:
        """How many entries the next read may ask for: one past the limit shows it is passed."""
        return max(1, min(_CHUNK, self.limit + 1 - self.scanned))


async def _latest(
    redis: aioredis.Redis,
    stream: str,
    after: StreamId,
    upto: StreamId,
    principal: Principal,
    scan: _Scan,
) -> list[tuple[StreamId, dict[str, Any]]]:
    """The latest snapshot of each operation changed in one stream between two entry ids, with
    the id of that change. Only the snapshots the principal may read are parsed."""
    latest: dict[str, tuple[StreamId, dict[str, Any]]] = {}
    start, until = f"({after[0]}-{after[1]}", f"{upto[0]}-{upto[1]}"
    while True:
        count = scan.count()
        entries: Any = await redis.xrange(stream, min=start, max=until, count=count)
        scan.scanned += len(entries)
        if scan.too_far:
            return []
        for entry_id, fields in entries:
            if not principal.may_read(fields.get(b"user", b"").decode(errors="replace")):
                continue
            record: dict[str, Any] = orjson.loads(fields[b"op"])
            cursor = entry_id.decode()
            record["cursor"] = cursor
            latest.pop(record["id"], None)
            ms, seq = cursor.split("-")
            latest[record["id"]] = ((int(ms), int(seq)), record)
        if len(entries) < count:
            break
        start = f"({entries[-1][0].decode()}"
    return list(latest.values())


async def _still_whole(redis: aioredis.Redis, stream: str, after: StreamId) -> bool:
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


def _cursor_of(value: Any) -> StreamId | None:
    if value is None:
        return None
    ids = parse_cursor(value.decode() if isinstance(value, bytes) else str(value), 1)
    return ids[0] if ids else None
