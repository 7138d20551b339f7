"""The change streams' entries and cursors, read in one place.

``lua/apply.lua`` appends one entry per applied change to its shard's stream, with the fields
:data:`STREAM_FIELDS` in that order; :func:`entry_of` reads them by position, for the live tail
(:mod:`operations.feed`) and for the range reads that bring a reconnecting reader up to date
(:class:`StreamRanges`). A cursor is the position of the feed just after a change: the stream
entry id with one shard, and with several the entry ids of every shard, comma-separated, in shard
order. Cursors are made and parsed here, nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from operations.store.redis_client import round_trip

STREAM_FIELDS = ("op", "id", "user", "state")
"""The fields of a change stream entry, in the order apply.lua's XADD writes them: they are
read by position (1, 3, 5, 7), not by name."""

StreamId = tuple[int, int]

_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_CHUNK = 1_000
# A range read's round trip on one server: the shared client's own socket timeout.
_RANGE_SECONDS = 10.0


class FeedEntry(NamedTuple):
    cursor: str
    operation_id: str
    user_id: str | None
    state: str
    snapshot: bytes


def entry_of(cursor: str, fields: list[bytes]) -> FeedEntry:
    """An entry's fields read by position, as the apply script writes them (STREAM_FIELDS)."""
    user = fields[5].decode()
    return FeedEntry(cursor, fields[3].decode(), user or None, fields[7].decode(), fields[1])


def parse_cursor(cursor: str, shards: int) -> list[StreamId] | None:
    """A cursor's stream position in each shard, or None if it is not a cursor of this layout."""
    parts = cursor.split(",")
    if len(parts) != shards:
        return None
    ids = []
    for part in parts:
        match = _STREAM_ID.fullmatch(part)
        if match is None:
            return None
        ids.append((int(match[1]), int(match[2])))
    return ids


def is_ahead(cursor: list[StreamId], position: list[StreamId]) -> bool:
    """True when the cursor is past the position in some shard (another process got further)."""
    return any(mine > theirs for mine, theirs in zip(cursor, position, strict=True))


def cursor_of(ids: list[str]) -> str:
    """The cursor of a position given as each shard's stream entry id."""
    return ",".join(ids)


@dataclass(frozen=True)
class Missed:
    """What a reader missed between two cursors: the latest change of each operation it may
    see, oldest change first. ``complete`` is false when the range cannot be read whole: a
    cursor not of this layout, ``since`` past ``until``, entries trimmed away, or more than
    the limit of entries to read (``too_far``)."""

    entries: list[FeedEntry]
    complete: bool
    scanned: int = 0  # stream entries read
    too_far: bool = False


class _Scan:
    def __init__(self, limit: int) -> None:
        self.limit, self.scanned = limit, 0

    @property
    def too_far(self) -> bool:
        return self.scanned > self.limit

    def count(self) -> int:
        """How many entries the next read may ask for: one past the limit shows it is passed."""
        return max(1, min(_CHUNK, self.limit + 1 - self.scanned))


Visible = Callable[[str], bool]
"""Whether the reader may see a change, given its owner's user id ("" for none)."""


class StreamRanges:
    """Range reads of the change streams. On one server they go through ``client``'s pool (the
    shared one) and are read as Redis sends them; on a cluster, through ``client`` routed by
    key, which must keep XRANGE replies as sent."""

    def __init__(self, streams: list[str], client: aioredis.Redis, cluster: bool) -> None:
        self.streams = streams
        self.client = client
        self.cluster = cluster

    async def missed(self, since: str, until: str, visible: Visible, limit: int) -> Missed:
        """The changes after ``since`` and up to ``until`` (inclusive) that ``visible`` lets
        through; each stream (shard) is read from its own position in the cursor. Past
        ``limit`` entries read (everyone's changes), it gives up."""
        shards = len(self.streams)
        after, upto = parse_cursor(since, shards), parse_cursor(until, shards)
        if after is None or upto is None or is_ahead(after, upto):
            return Missed([], False)
        found: list[tuple[StreamId, FeedEntry]] = []
        scan = _Scan(limit)
        for stream, start, end in zip(self.streams, after, upto, strict=True):
            if start == end:
                continue
            if not await self._still_whole(stream, start):
                return Missed([], False, scan.scanned)
            found.extend(await self._latest(stream, start, end, visible, scan))
            if scan.too_far:
                return Missed([], False, scan.scanned, too_far=True)
        found.sort(key=lambda item: item[0])
        if shards == 1:
            return Missed([entry for _, entry in found], True, scan.scanned)
        # A single stream's entry id is no cursor of this layout: each change gets the range's.
        entries = [entry._replace(cursor=until) for _, entry in found]
        return Missed(entries, True, scan.scanned)

    async def _latest(
        self, stream: str, after: StreamId, upto: StreamId, visible: Visible, scan: _Scan
    ) -> list[tuple[StreamId, FeedEntry]]:
        """The latest visible change of each operation in one stream between two entry ids,
        with the id of that change."""
        latest: dict[str, tuple[StreamId, FeedEntry]] = {}
        start, until = f"({after[0]}-{after[1]}", f"{upto[0]}-{upto[1]}"
        while True:
            count = scan.count()
            entries = await self._range(stream, start, until, count)
            scan.scanned += len(entries)
            if scan.too_far:
                return []
            for raw_id, fields in entries:
                entry = entry_of(raw_id.decode(), fields)
                if not visible(entry.user_id or ""):
                    continue
                latest.pop(entry.operation_id, None)
                ms, seq = entry.cursor.split("-")
                latest[entry.operation_id] = ((int(ms), int(seq)), entry)
            if len(entries) < count:
                break
            start = f"({entries[-1][0].decode()}"
        return list(latest.values())

    async def _range(self, stream: str, start: str, end: str, count: int) -> Any:
        """XRANGE, its entries as Redis sends them: (id, [field, value, ...])."""
        command = ("XRANGE", stream, start, end, "COUNT", count)
        if self.cluster:
            return await self.client.execute_command(*command, keys=[stream])  # type: ignore[no-untyped-call]
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            (reply,) = await round_trip(
                connection, b"".join(connection.pack_command(*command)), 1, _RANGE_SECONDS
            )
        finally:
            await pool.release(connection)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _still_whole(self, stream: str, after: StreamId) -> bool:
        """True when no entry after ``after`` can have been trimmed or deleted from the stream."""
        try:
            info: Any = await self.client.xinfo_stream(stream)
        except ResponseError:  # no stream yet: nothing was ever trimmed
            return True
        deleted = _id_of(info.get("max-deleted-entry-id"))
        if deleted is not None and deleted > after:
            return False
        first = info.get("first-entry")
        first_id = _id_of(first[0]) if first else None
        if first_id is not None and first_id <= after:
            return True
        added = info.get("entries-added")
        return added is not None and int(added) == int(info.get("length", 0))


def _id_of(value: Any) -> StreamId | None:
    if value is None:
        return None
    ids = parse_cursor(value.decode() if isinstance(value, bytes) else str(value), 1)
    return ids[0] if ids else None
