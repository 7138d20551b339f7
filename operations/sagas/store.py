"""Where sagas live: Redis for real, memory for tests; both pass the same contract tests.

Redis keys (``P`` is ``OPERATIONS_KEY_PREFIX``; ``S`` is the saga's shard, from ``NAME:ID``, see
:mod:`operations.shards`; ``{S}`` is a Redis Cluster hash tag, so each script touches one slot):

    P:{S}:saga:NAME:ID                hash    version, doc (the SagaRecord as JSON)
    P:{S}:saga:NAME:ID:outbox         list    messages committed but not yet confirmed
    P:{S}:saga:NAME:ID:outbox:lease   string  who is sending that outbox now (expires by itself)
    P:{S}:saga-outbox                 zset    the shard's sagas with a non-empty outbox, scored by
                                              first commit time
    P:{S}:saga-deadlines              zset    the shard's running sagas with a deadline, scored by
                                              the deadline
    P:{S}:saga-index                  zset    the shard's sagas, scored by last commit time

A commit is one Lua script: it checks the version read, writes the new state and appends the
outbox in one step. A finished saga's hash expires after the configured time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from ..errors import StoreUnavailable
from ..shards import Shards
from .records import OutboxEntry, SagaRecord

_LUA = resources.files("operations") / "lua"
COMMIT_SCRIPT = (_LUA / "saga_commit.lua").read_text(encoding="utf-8")
ACK_SCRIPT = (_LUA / "outbox_ack.lua").read_text(encoding="utf-8")
# Deletes a lease only if it is still the caller's.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Loaded:
    record: SagaRecord
    version: int


@dataclass(frozen=True)
class Pending:
    """A saga's committed messages still waiting for the broker's confirm, in publish order."""

    saga: str
    saga_id: str
    entries: list[tuple[str, OutboxEntry]]  # (stored form, entry)


class SagaStore(Protocol):
    async def load(self, saga: str, saga_id: str) -> Loaded | None: ...

    async def commit(
        self,
        record: SagaRecord,
        expected_version: int,
        outbox: list[OutboxEntry],
        finished_ttl_seconds: int,
    ) -> bool:
        """Store the record and its outbox if the version is still ``expected_version``."""
        ...

    async def pending(self, older_than: float, limit: int = 100) -> list[Pending]: ...

    async def outbox(self, saga: str, saga_id: str) -> Pending:
        """Everything in one saga's outbox, oldest first."""
        ...

    async def lease_outbox(self, saga: str, saga_id: str, holder: str, seconds: float) -> bool:
        """Become the one sender of this saga's outbox, unless another holds the lease."""
        ...

    async def release_outbox(self, saga: str, saga_id: str, holder: str) -> None: ...

    async def recent(self, limit: int = 100) -> list[SagaRecord]:
        """The sagas committed most recently, newest first (finished ones until they expire)."""
        ...

    async def acknowledge(self, saga: str, saga_id: str, stored: list[str]) -> None: ...

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]: ...


def _member(saga: str, saga_id: str) -> str:
    return f"{saga}:{saga_id}"


def _split(member: str) -> tuple[str, str]:
    saga, _, saga_id = member.partition(":")
    return saga, saga_id


class MemorySagaStore:
    """The same contract in one process's memory."""

    def __init__(self) -> None:
        self.sagas: dict[str, tuple[int, str]] = {}
        self.outboxes: dict[str, list[str]] = {}
        self.deadlines: dict[str, float] = {}
        self.first_commit: dict[str, float] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.committed: dict[str, float] = {}

    async def load(self, saga: str, saga_id: str) -> Loaded | None:
        found = self.sagas.get(_member(saga, saga_id))
        if found is None:
            return None
        version, document = found
        return Loaded(SagaRecord.from_json(orjson.loads(document)), version)

    async def commit(
        self,
        record: SagaRecord,
        expected_version: int,
        outbox: list[OutboxEntry],
        finished_ttl_seconds: int,
    ) -> bool:
        member = record.key
        current = self.sagas.get(member, (0, ""))[0]
        if current != expected_version:
            return False
        self.sagas[member] = (current + 1, orjson.dumps(record.to_json()).decode())
        self.committed[member] = time.time()
        if outbox:
            self.outboxes.setdefault(member, []).extend(
                orjson.dumps(entry.to_json()).decode() for entry in outbox
            )
            self.first_commit.setdefault(member, time.time())
        if record.status.finished or record.deadline is None:
            self.deadlines.pop(member, None)
        else:
            self.deadlines[member] = record.deadline
        return True

    async def pending(self, older_than: float, limit: int = 100) -> list[Pending]:
        found = []
        for member, since in sorted(self.first_commit.items(), key=lambda item: item[1]):
            if since <= older_than and self.outboxes.get(member):
                saga, saga_id = _split(member)
                entries = [
                    (raw, OutboxEntry.from_json(orjson.loads(raw))) for raw in self.outboxes[member]
                ]
                found.append(Pending(saga, saga_id, entries))
        return found[:limit]

    async def outbox(self, saga: str, saga_id: str) -> Pending:
        stored = self.outboxes.get(_member(saga, saga_id), [])
        return Pending(
            saga, saga_id, [(raw, OutboxEntry.from_json(orjson.loads(raw))) for raw in stored]
        )

    async def recent(self, limit: int = 100) -> list[SagaRecord]:
        newest = sorted(self.committed.items(), key=lambda item: item[1], reverse=True)[:limit]
        return [SagaRecord.from_json(orjson.loads(self.sagas[member][1])) for member, _ in newest]

    async def lease_outbox(self, saga: str, saga_id: str, holder: str, seconds: float) -> bool:
        member = _member(saga, saga_id)
        current = self.leases.get(member)
        if current is not None and current[1] > time.monotonic() and current[0] != holder:
            return False
        self.leases[member] = (holder, time.monotonic() + seconds)
        return True

    async def release_outbox(self, saga: str, saga_id: str, holder: str) -> None:
        member = _member(saga, saga_id)
        if self.leases.get(member, ("", 0.0))[0] == holder:
            del self.leases[member]

    async def acknowledge(self, saga: str, saga_id: str, stored: list[str]) -> None:
        member = _member(saga, saga_id)
        outbox = self.outboxes.get(member, [])
        for raw in stored:
            if raw in outbox:
                outbox.remove(raw)
        if not outbox:
            self.outboxes.pop(member, None)
            self.first_commit.pop(member, None)

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        members = sorted(
            (deadline, member) for member, deadline in self.deadlines.items() if deadline <= now
        )
        return [_split(member) for _, member in members[:limit]]


class RedisSagaStore:
    def __init__(
        self, client: aioredis.Redis, prefix: str = "operations", shards: Shards | None = None
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.shards = shards or Shards()
        self._commit = client.register_script(COMMIT_SCRIPT)
        self._ack = client.register_script(ACK_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    def _tag(self, member: str) -> str:
        return self.shards.tag(self.prefix, self.shards.of(member))

    def saga_key(self, member: str) -> str:
        return f"{self._tag(member)}:saga:{member}"

    def outbox_key(self, member: str) -> str:
        return f"{self.saga_key(member)}:outbox"

    def outbox_index(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-outbox"

    def deadlines(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-deadlines"

    def index(self, shard: int) -> str:
        return f"{self.shards.tag(self.prefix, shard)}:saga-index"

    async def recent(self, limit: int = 100) -> list[SagaRecord]:
        """The sagas committed last, newest first, over every shard."""
        try:
            newest: list[tuple[float, int, bytes]] = []
            for shard in self.shards:
                rows: Any = await self.redis.zrange(
                    self.index(shard), 0, limit - 1, desc=True, withscores=True
                )
                newest.extend((score, shard, member) for member, score in rows)
            newest.sort(key=lambda row: -row[0])
            newest = newest[:limit]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, _, member in newest:
                    pipe.hget(self.saga_key(member.decode()), "doc")
                documents: list[Any] = await pipe.execute()
            for (_, shard, member), document in zip(newest, documents, strict=True):
                if document is None:
                    await self.redis.zrem(self.index(shard), member)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return [SagaRecord.from_json(orjson.loads(doc)) for doc in documents if doc is not None]

    async def load(self, saga: str, saga_id: str) -> Loaded | None:
        try:
            fields: Any = await self.redis.hmget(
                self.saga_key(_member(saga, saga_id)), "version", "doc"
            )
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        version, document = fields
        if version is None or document is None:
            return None
        return Loaded(SagaRecord.from_json(orjson.loads(document)), int(version))

    async def commit(
        self,
        record: SagaRecord,
        expected_version: int,
        outbox: list[OutboxEntry],
        finished_ttl_seconds: int,
    ) -> bool:
        member = record.key
        shard = self.shards.of(member)
        arguments: list[Any] = [
            expected_version,
            orjson.dumps(record.to_json()).decode(),
            member,
            repr(time.time()),
            "" if record.deadline is None else repr(record.deadline),
            "1" if record.status.finished else "0",
            finished_ttl_seconds,
            *(orjson.dumps(entry.to_json()).decode() for entry in outbox),
        ]
        keys = [
            self.saga_key(member),
            self.outbox_key(member),
            self.outbox_index(shard),
            self.deadlines(shard),
            self.index(shard),
        ]
        try:
            version = await self._commit(keys=keys, args=arguments)
        except NoScriptError:
            version = await self._commit(keys=keys, args=arguments)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis could not commit the saga: {error}") from error
        return int(version) > 0

    async def pending(self, older_than: float, limit: int = 100) -> list[Pending]:
        found: list[Pending] = []
        for shard, member in await self._scored_upto(self.outbox_index, older_than, limit):
            pending = await self.outbox(*_split(member))
            if pending.entries:
                found.append(pending)
                continue
            try:
                await self.redis.zrem(self.outbox_index(shard), member)
            except (RedisError, OSError) as error:
                raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return found

    async def _scored_upto(
        self, index: Callable[[int], str], upto: float, limit: int
    ) -> list[tuple[int, str]]:
        """Up to ``limit`` members scored at most ``upto`` in the shards' ``index``, shard by
        shard, each with its shard."""
        found: list[tuple[int, str]] = []
        try:
            for shard in self.shards:
                if len(found) >= limit:
                    break
                members: Any = await self.redis.zrange(
                    index(shard), "-inf", upto, byscore=True, offset=0, num=limit - len(found)
                )
                found.extend((shard, member.decode()) for member in members)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return found

    async def outbox(self, saga: str, saga_id: str) -> Pending:
        try:
            stored: Any = await self.redis.lrange(self.outbox_key(_member(saga, saga_id)), 0, -1)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return Pending(
            saga,
            saga_id,
            [(raw.decode(), OutboxEntry.from_json(orjson.loads(raw))) for raw in stored],
        )

    async def lease_outbox(self, saga: str, saga_id: str, holder: str, seconds: float) -> bool:
        key = f"{self.outbox_key(_member(saga, saga_id))}:lease"
        try:
            taken = await self.redis.set(key, holder, nx=True, px=int(seconds * 1000))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return bool(taken)

    async def release_outbox(self, saga: str, saga_id: str, holder: str) -> None:
        key = f"{self.outbox_key(_member(saga, saga_id))}:lease"
        try:
            await self._release(keys=[key], args=[holder])
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error

    async def acknowledge(self, saga: str, saga_id: str, stored: list[str]) -> None:
        member = _member(saga, saga_id)
        try:
            await self._ack(
                keys=[self.outbox_key(member), self.outbox_index(self.shards.of(member))],
                args=[member, *stored],
            )
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        due = await self._scored_upto(self.deadlines, now, limit)
        return [_split(member) for _, member in due]
