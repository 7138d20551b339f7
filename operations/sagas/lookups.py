"""What an operator asks the saga store: the sagas holding a business-key value, the sagas
overdue at a step (counted, listed, and told once each), the messages a saga's last step sent,
and a short hold that makes a retry of its waiting step happen once.

Every read is bounded by a limit; the indexes it reads are written by the commit script
(``lua/saga_commit.lua``), one per value and one per (type, step) a shard, so a lookup is one
read per shard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from operations.errors import StoreUnavailable
from operations.sagas.records import OutboxEntry, SagaRecord
from operations.store.keys import SagaKeys, member_of, split_member
from operations.store.shards import Shards

Step = tuple[str, str]
"""A saga type's name and a message of its path."""

# Takes the members of one overdue index that became overdue by ARGV[1] and have not been told
# (scored from 0 to now), at most ARGV[2], and negates their scores: each is told once.
_TELL_SCRIPT = """
local due = redis.call('ZRANGE', KEYS[1], 0, ARGV[1], 'BYSCORE', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local told = {}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], -tonumber(due[i + 1]), due[i])
  told[#told + 1] = due[i]
end
return told
"""


class SagaLookups(Protocol):
    async def holding(self, value: str, limit: int) -> list[SagaRecord]:
        """Sagas (running or finished, until they expire) holding ``value`` in a business key,
        newest first."""
        ...

    async def overdue(self, steps: Sequence[Step], limit: int) -> list[SagaRecord]:
        """Running sagas overdue now at any of ``steps``, the longest overdue first."""
        ...

    async def overdue_counts(self, steps: Sequence[Step]) -> dict[Step, int]:
        """How many running sagas are overdue now at each of ``steps`` (every one present)."""
        ...

    async def newly_overdue(self, steps: Sequence[Step], limit: int) -> list[tuple[str, str, str]]:
        """(type, id, step) of sagas overdue now whose becoming so nobody was told yet: each
        is answered once, to one caller across processes."""
        ...

    async def last_sent(self, saga_name: str, saga_id: str) -> list[OutboxEntry]:
        """The messages the saga's latest step that published anything published."""
        ...

    async def hold_retry(self, saga_name: str, saga_id: str, seconds: float) -> bool:
        """True for the first caller in ``seconds``; False while an earlier retry holds."""
        ...

    async def release_retry(self, saga_name: str, saga_id: str) -> None: ...


class RedisSagaLookups:
    """The lookups on the Redis saga store (its base class)."""

    redis: aioredis.Redis
    keys: SagaKeys
    shards: Shards

    def _overdue_indexes(self, steps: Sequence[Step]) -> list[tuple[Step, str]]:
        return [(step, self.keys.overdue(shard, *step)) for step in steps for shard in self.shards]

    async def holding(self, value: str, limit: int) -> list[SagaRecord]:
        now = f"({time.time()!r}"
        try:
            members: list[tuple[float, str]] = []
            for shard in self.shards:
                found: Any = await self.redis.zrange(
                    self.keys.business_key(shard, value),
                    "+inf",
                    now,
                    desc=True,
                    byscore=True,
                    offset=0,
                    num=limit,
                    withscores=True,
                )
                members.extend((score, member.decode()) for member, score in found)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        records = await self._records([member for _, member in members])
        held = [record for record in records if value in record.keys]
        return sorted(held, key=lambda record: -record.updated_at)[:limit]

    async def overdue(self, steps: Sequence[Step], limit: int) -> list[SagaRecord]:
        now = time.time()
        try:
            members: list[str] = []
            for _, index in self._overdue_indexes(steps):
                found: Any = await self.redis.zrange(
                    index, "-inf", repr(now), byscore=True, offset=0, num=limit
                )
                members.extend(member.decode() for member in found)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        records = [record for record in await self._records(members) if record.overdue]
        return sorted(records, key=lambda record: record.overdue_at or now)[:limit]

    async def overdue_counts(self, steps: Sequence[Step]) -> dict[Step, int]:
        indexes = self._overdue_indexes(steps)
        counts = dict.fromkeys(steps, 0)
        if not indexes:
            return counts
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, index in indexes:
                    pipe.zcount(index, "-inf", repr(time.time()))
                sizes: list[Any] = await pipe.execute()
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        for (step, _), size in zip(indexes, sizes, strict=True):
            counts[step] += int(size)
        return counts

    async def newly_overdue(self, steps: Sequence[Step], limit: int) -> list[tuple[str, str, str]]:
        """One round trip when nothing is new (a count of the untold in every index), then the
        telling script only on the indexes that have some."""
        told: list[tuple[str, str, str]] = []
        indexes = self._overdue_indexes(steps)
        if not indexes:
            return told
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, index in indexes:
                    pipe.zcount(index, 0, repr(time.time()))
                untold: list[Any] = await pipe.execute()
            for ((saga_name, step), index), count in zip(indexes, untold, strict=True):
                if len(told) >= limit:
                    break
                if not int(count):
                    continue
                members: Any = await self.redis.eval(
                    _TELL_SCRIPT, 1, index, repr(time.time()), limit - len(told)
                )
                for member in members:
                    _, saga_id = split_member(member.decode())
                    told.append((saga_name, saga_id, step))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return told

    async def last_sent(self, saga_name: str, saga_id: str) -> list[OutboxEntry]:
        try:
            sent: Any = await self.redis.hget(self.keys.saga(member_of(saga_name, saga_id)), "sent")
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return [] if sent is None else [OutboxEntry.from_json(item) for item in orjson.loads(sent)]

    async def hold_retry(self, saga_name: str, saga_id: str, seconds: float) -> bool:
        key = self.keys.retry(member_of(saga_name, saga_id))
        try:
            return bool(await self.redis.set(key, "1", nx=True, px=max(1, int(seconds * 1000))))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error

    async def release_retry(self, saga_name: str, saga_id: str) -> None:
        try:
            await self.redis.delete(self.keys.retry(member_of(saga_name, saga_id)))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error

    async def _records(self, members: Sequence[str]) -> list[SagaRecord]:
        """The stored records of ``members`` (those that still exist), in that order."""
        if not members:
            return []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hget(self.keys.saga(member), "doc")
                documents: list[Any] = await pipe.execute()
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return [SagaRecord.from_json(orjson.loads(doc)) for doc in documents if doc is not None]
