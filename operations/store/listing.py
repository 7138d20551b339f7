"""Listing operations newest first over every shard's index, a page at a time, with cursors.

The shards' indexes are read from the cursor's position, a page's worth each, in one round trip;
the merge takes them in total order (rank descending, then shard, then the index's own order),
and the cursor remembers where it stopped: the last rank, its shard, and how many entries of
the last id taken there. Equal ranks in one shard come in the index's own order, by id as the
index holds it (:func:`operations.store.keys.pack_id`), reversed, so the cursor needs no count
of entries behind it: an entry removed between two pages (expired, swept or pruned) never makes
the next page skip a live one. An id whose record has expired is skipped and pruned.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from operations.errors import StoreError, StoreUnavailable
from operations.records import Operation
from operations.states import State
from operations.store.keys import unpack_id

if TYPE_CHECKING:
    from operations.store.keys import Keys

MAX_PAGE = 200
_SCAN_FACTOR = 20


@dataclass(frozen=True)
class Page:
    items: list[Operation]
    next: str | None


@dataclass(frozen=True)
class ListQuery:
    user_id: str | None = None  # None: every user's operations (admins only)
    state: State | None = None
    name: str | None = None
    limit: int = 50
    cursor: str | None = None


class Listing:
    """Reads pages of the indexes; ``read`` fetches records by id, ``prune`` removes ids whose
    record is gone from one shard's index."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        read: Callable[[list[str]], Awaitable[list[Operation | None]]],
        prune: Callable[[str, int, Sequence[bytes]], Awaitable[int]],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self._read = read
        self._prune = prune

    async def page(self, query: ListQuery) -> Page:
        """One page of the query's index, newest first, merged over the shards."""
        limit = max(1, min(query.limit, MAX_PAGE))
        position = _decode_cursor(query.cursor)
        items: list[Operation] = []
        scanned, budget = 0, limit * _SCAN_FACTOR
        try:
            while len(items) < limit and scanned < budget:
                chunk = limit - len(items)
                rows = await self._rows_after(query.user_id, position, chunk)
                taken = rows[:chunk]
                records = await self._read([unpack_id(member) for _, _, member in taken])
                expired: dict[int, list[bytes]] = {}
                for (rank, shard, member), record in zip(taken, records, strict=True):
                    scanned += 1
                    position = _Position(rank, shard, member)
                    if record is None:
                        expired.setdefault(shard, []).append(member)
                    elif _matches(record, query):
                        items.append(record)
                for shard, members in expired.items():
                    await self._prune(self._index(query.user_id, shard), shard, members)
                if len(rows) <= chunk and not rows.more:
                    return Page(items, None)
        except RedisError as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return Page(items, position.encode())

    def _index(self, user_id: str | None, shard: int) -> str:
        if user_id is None:
            return self.keys.index(shard)
        return self.keys.user_index(user_id, shard)

    async def _rows_after(self, user_id: str | None, position: _Position, count: int) -> _Rows:
        """Up to ``count`` index entries of each shard after ``position``, merged in order."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.shards:
                # In the cursor's own shard, one more: the entry the cursor names comes again.
                extra = 1 if shard == position.shard else 0
                pipe.zrange(
                    self._index(user_id, shard),
                    position.top(shard),
                    "-inf",
                    desc=True,
                    byscore=True,
                    offset=0,
                    num=count + extra,
                    withscores=True,
                )
            replies: list[Any] = await pipe.execute()
        merged = _Rows()
        for shard, rows in enumerate(replies):
            merged.more = merged.more or len(rows) == count + (shard == position.shard)
            for member, score in rows:
                row = (int(score), shard, bytes(member))
                if position.before(row):
                    merged.append(row)
        # Stable: within a rank and shard, the index's own order (ids reversed) is kept.
        merged.sort(key=lambda row: (-row[0], row[1]))
        return merged


def _matches(record: Operation, query: ListQuery) -> bool:
    if query.state is not None and record.state is not query.state:
        return False
    return query.name is None or record.name == query.name


class _Rows(list[tuple[int, int, bytes]]):
    """Index entries as (rank, shard, member: the operation id as the index holds it);
    ``more`` when some shard may hold more."""

    more: bool = False


@dataclass(frozen=True)
class _Position:
    """Where a listing stopped: at ``member`` (an operation id as the index holds it) of rank
    ``rank`` in shard ``shard``, after everything ranked higher, or ranked the same in a lower
    shard."""

    rank: int | None = None  # None: before the newest entry
    shard: int = 0
    member: bytes = b""

    def top(self, shard: int) -> str:
        """The highest rank to read in ``shard`` (a ``(`` makes it exclusive)."""
        if self.rank is None:
            return "+inf"
        return f"({self.rank}" if shard < self.shard else str(self.rank)

    def before(self, row: tuple[int, int, bytes]) -> bool:
        """Whether an index entry comes after this position (is still to be listed)."""
        rank, shard, member = row
        if self.rank is None or rank < self.rank:
            return True
        if rank > self.rank:
            return False
        if shard != self.shard:
            return shard > self.shard
        return member < self.member  # equal ranks come by id, reversed

    def encode(self) -> str:
        data = b"%s:%d:%s" % (str(self.rank).encode(), self.shard, self.member)
        return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> _Position:
    if not cursor:
        return _Position()
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        rank, shard, member = base64.urlsafe_b64decode(padded).split(b":", 2)
        position = _Position(int(rank), int(shard), member)
    except (ValueError, binascii.Error):
        raise InvalidCursor(cursor) from None
    if position.shard < 0:
        raise InvalidCursor(cursor)
    return position


class InvalidCursor(StoreError):
    """A listing cursor this service did not issue."""

    code = "invalid_cursor"

    def __init__(self, cursor: str) -> None:
        super().__init__(f"cursor {cursor[:40]!r} is not one this service issued")
