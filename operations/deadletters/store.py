"""Dead letters in Redis, bounded by count and age.

Its keys are named by :class:`operations.store.keys.DeadLetterKeys`, where their layout is
described. Every key family has its own word and at most one variable part, last: a group key is
a hash of the queue and reason, and a letter id never names another key. The keep script checks
the types of the keys it writes before its first write.

Keeping (``lua/dead_letter_keep.lua``) is idempotent by id, and applies the bounds in the same
step: letters older than ``OPERATIONS_DEAD_LETTER_MAX_AGE_SECONDS`` go, then the oldest beyond
``OPERATIONS_DEAD_LETTER_MAX_COUNT``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from operations.deadletters.letters import (
    DeadLetterGroup,
    DeadLetterItem,
    DeadLetterPage,
    StoredLetter,
    group_key,
)
from operations.errors import StoreUnavailable
from operations.store.keys import DeadLetterKeys
from operations.store.listing import InvalidCursor
from operations.timestamps import rfc3339

_LUA = resources.files("operations.store") / "lua"
KEEP_SCRIPT = (_LUA / "dead_letter_keep.lua").read_text(encoding="utf-8")
REMOVE_SCRIPT = (_LUA / "dead_letter_remove.lua").read_text(encoding="utf-8")
_CHUNK = 256
_DECODER = msgspec.json.Decoder(StoredLetter)
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class Kept:
    """What one keep did: ``kept`` is ``stored``, ``seen`` (kept before) or ``too-old``; and the
    ids dropped to stay within the bounds."""

    kept: str
    dropped_for_age: list[str]
    dropped_for_count: list[str]


class DeadLetterStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        max_count: int,
        max_age_seconds: int,
    ) -> None:
        self.redis = redis
        self.keys = DeadLetterKeys(prefix)
        self.max_count = max_count
        self.max_age_seconds = max_age_seconds
        self._keep = redis.register_script(KEEP_SCRIPT)
        self._remove = redis.register_script(REMOVE_SCRIPT)

    async def keep(self, letter: StoredLetter | None, now: dt.datetime | None = None) -> Kept:
        """Keeps ``letter`` unless its id was kept before, then applies the bounds (only the
        bounds when ``letter`` is None). Raises StoreUnavailable when Redis cannot be reached."""
        now_ms = int((now or dt.datetime.now(dt.UTC)).timestamp() * 1000)
        oldest = now_ms - self.max_age_seconds * 1000
        keys = self.keys
        if letter is None:
            arguments: list[Any] = ["", "", 0, "", ""]
        else:
            item = letter.item
            arguments = [
                item.id,
                _ENCODER.encode(letter),
                letter.at_ms,
                group_key(item.queue, item.reason),
                _ENCODER.encode({"queue": item.queue, "reason": item.reason}),
            ]
        try:
            reply = await self._keep(
                keys=[keys.letters, keys.index, keys.groups, keys.group_of, keys.seen],
                args=[keys.tag, *arguments, self.max_count, oldest, now_ms],
            )
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis: {error}") from error
        outcome, aged, over = int(reply[0]), int(reply[1]), int(reply[2])
        ids = [_str(value) for value in reply[3:]]
        return Kept(
            {1: "stored", 0: "seen", 2: "too-old"}[outcome], ids[:aged], ids[aged : aged + over]
        )

    async def get(self, letter_id: str) -> StoredLetter | None:
        raw = await self._call(self.redis.hget(self.keys.letters, letter_id))
        return _DECODER.decode(raw) if raw is not None else None

    async def remove(self, letter_id: str) -> bool:
        keys = self.keys
        removed = await self._call(
            self._remove(
                keys=[keys.letters, keys.index, keys.groups, keys.group_of],
                args=[keys.tag, letter_id],
            )
        )
        return bool(removed)

    async def count(self) -> int:
        return int(await self._call(self.redis.zcard(self.keys.index)))

    async def page(
        self, queue: str | None, reason: str | None, limit: int, cursor: str | None
    ) -> DeadLetterPage:
        """Newest first. The cursor is ``<ms>:<id>`` of the last item of the page before.

        It reads on from the last member it read, by score, not by offset: a letter kept
        meanwhile (the newest, at the top) shifts no offset, so none is listed twice or left
        out."""
        source = self.keys.index
        if queue is not None and reason is not None:
            source = self.keys.group(group_key(queue, reason))
        after: tuple[int, str] | None = None
        top: int | None = None  # the highest score still to read (inclusive); None: +inf
        if cursor is not None:
            after = _cursor(cursor)
            top = after[0]
        skip = 0  # how many members scored ``top`` were read already
        read: set[str] = set()
        items: list[DeadLetterItem] = []
        positions: list[tuple[int, str]] = []
        while len(items) <= limit:
            chunk = await self._call(
                self.redis.zrevrangebyscore(
                    source,
                    "+inf" if top is None else top,
                    "-inf",
                    start=skip,
                    num=_CHUNK,
                    withscores=True,
                )
            )
            if not chunk:
                break
            candidates = [(int(score), _str(member)) for member, score in chunk]
            last = candidates[-1][0]
            at_last = sum(1 for score, _ in candidates if score == last)
            skip = skip + at_last if last == top else at_last
            top = last
            candidates = [
                c
                for c in candidates
                if c[1] not in read and (after is None or c[0] < after[0] or c[1] < after[1])
            ]
            read.update(member for _, member in candidates)
            if not candidates:
                continue
            documents = await self._call(
                self.redis.hmget(self.keys.letters, [member for _, member in candidates])
            )
            for position, raw in zip(candidates, documents, strict=True):
                if raw is None:
                    continue
                item = _DECODER.decode(raw).item
                if (queue is None or item.queue == queue) and (
                    reason is None or item.reason == reason
                ):
                    items.append(item)
                    positions.append(position)
        following = None
        if len(items) > limit:
            score, member = positions[limit - 1]
            following = f"{score}:{member}"
        return DeadLetterPage(items[:limit], following)

    async def groups(self) -> list[DeadLetterGroup]:
        """Every group with its count and the times of its first and last letter, the group
        with the latest letter first."""
        raw = await self._call(self.redis.hgetall(self.keys.groups))
        described = {_str(key): value for key, value in raw.items()}
        if not described:
            return []
        keys = sorted(described)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                members = self.keys.group(key)
                pipe.zcard(members)
                pipe.zrange(members, 0, 0, withscores=True)
                pipe.zrange(members, -1, -1, withscores=True)
            replies = await self._call(pipe.execute())
        groups = []
        for position, key in enumerate(keys):
            count, first, last = replies[3 * position : 3 * position + 3]
            if not count or not first or not last:
                continue
            about = msgspec.json.decode(described[key])
            groups.append(
                DeadLetterGroup(
                    reason=about["reason"],
                    queue=about["queue"],
                    count=int(count),
                    first=rfc3339(first[0][1] / 1000),
                    last=rfc3339(last[0][1] / 1000),
                )
            )
        groups.sort(key=lambda group: group.last, reverse=True)
        return groups

    async def group_ids(self, queue: str, reason: str) -> list[str]:
        """The ids of one group, oldest first."""
        members = await self._call(
            self.redis.zrange(self.keys.group(group_key(queue, reason)), 0, -1)
        )
        return [_str(member) for member in members]

    async def hold(self, letter_id: str, seconds: int = 60) -> bool:
        """Marks a redrive of ``letter_id`` under way; False if one already is."""
        held = await self._call(
            self.redis.set(self.keys.redriving(letter_id), "1", nx=True, ex=seconds)
        )
        return bool(held)

    async def release(self, letter_id: str) -> None:
        await self._call(self.redis.delete(self.keys.redriving(letter_id)))

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis: {error}") from error


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cursor(raw: str) -> tuple[int, str]:
    score, _, letter_id = raw.partition(":")
    if not score.isdigit() or not letter_id:
        raise InvalidCursor(raw)
    return int(score), letter_id
