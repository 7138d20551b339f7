"""Where sagas live: Redis (here) for real, memory (``memory.py``) for tests; both pass the same
contract tests.

Its keys are named by :class:`operations.store.keys.SagaKeys`, where their layout is described.

A commit is one Lua script: it checks the version read, writes the new state, moves the saga
between the status indexes and appends the outbox in one step. A finished saga's hash expires
after the configured time; its tombstone, ``OPERATIONS_SAGA_TOMBSTONE_SECONDS`` after it
finished (never before the hash). The sweep (``lua/saga_sweep.lua``) then removes it from the
index and status indexes, and drops tombstones past their time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from operations.errors import StoreError, StoreUnavailable
from operations.sagas.lookups import RedisSagaLookups, SagaLookups
from operations.sagas.records import OutboxEntry, SagaRecord, SagaStatus
from operations.store.keys import SagaKeys, member_of, split_member
from operations.store.shards import Shards

_LUA = resources.files("operations.store") / "lua"
COMMIT_SCRIPT = (_LUA / "saga_commit.lua").read_text(encoding="utf-8")
ACK_SCRIPT = (_LUA / "outbox_ack.lua").read_text(encoding="utf-8")
SWEEP_SCRIPT = (_LUA / "saga_sweep.lua").read_text(encoding="utf-8")
SWEEP_BATCH = 500
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

    saga_name: str
    saga_id: str
    entries: list[tuple[str, OutboxEntry]]  # (stored form, entry)


class SagaStore(SagaLookups, Protocol):
    async def load(self, saga_name: str, saga_id: str) -> Loaded | None: ...

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

    async def outbox(self, saga_name: str, saga_id: str) -> Pending:
        """Everything in one saga's outbox, oldest first."""
        ...

    async def lease_outbox(self, saga_name: str, saga_id: str, holder: str, seconds: float) -> bool:
        """Become the one sender of this saga's outbox, unless another holds the lease."""
        ...

    async def release_outbox(self, saga_name: str, saga_id: str, holder: str) -> None: ...

    async def recent(
        self, limit: int = 100, status: SagaStatus | None = None, saga_name: str | None = None
    ) -> list[SagaRecord]:
        """The sagas committed most recently, newest first (finished ones until they expire),
        only those in ``status`` if given, and of the type named ``saga_name`` if given (exactly
        so when a status is given too: the status indexes are kept per type)."""
        ...

    async def acknowledge(self, saga_name: str, saga_id: str, stored: list[str]) -> None: ...

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        """Sagas whose deadline, or whose orphaned compensation, is due by ``now``."""
        ...

    async def counts(self) -> dict[tuple[str, SagaStatus], int]:
        """How many sagas of each type are in each status now (finished ones until they
        expire); every status of every type seen is present."""
        ...

    async def tombstoned(self, saga_name: str, saga_id: str) -> bool:
        """Whether this saga finished within the tombstone horizon (even if it has expired)."""
        ...

    async def sweep(self) -> Swept:
        """Forget expired sagas in the indexes, and tombstones past their horizon."""
        ...


@dataclass(frozen=True)
class Swept:
    sagas: int
    tombstones: int


class RedisSagaStore(RedisSagaLookups):
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "operations",
        shards: Shards | None = None,
        tombstone_seconds: int = 0,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.shards = shards or Shards()
        self.keys = SagaKeys(prefix, self.shards)
        self.tombstone_seconds = tombstone_seconds
        self._commit = client.register_script(COMMIT_SCRIPT)
        self._sweep = client.register_script(SWEEP_SCRIPT)
        self._ack = client.register_script(ACK_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)

    async def recent(
        self, limit: int = 100, status: SagaStatus | None = None, saga_name: str | None = None
    ) -> list[SagaRecord]:
        """The sagas committed last, newest first, over every shard."""
        if status is not None:
            return await self._in_status(status, limit, saga_name)
        try:
            newest: list[tuple[float, int, bytes]] = []
            for shard in self.shards:
                rows: Any = await self.redis.zrange(
                    self.keys.index(shard), 0, limit - 1, desc=True, withscores=True
                )
                newest.extend((score, shard, member) for member, score in rows)
            newest.sort(key=lambda row: -row[0])
            newest = newest[:limit]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, _, member in newest:
                    pipe.hget(self.keys.saga(member.decode()), "doc")
                documents: list[Any] = await pipe.execute()
            for (_, shard, member), document in zip(newest, documents, strict=True):
                if document is None:
                    await self.redis.zrem(self.keys.index(shard), member)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        records = [SagaRecord.from_json(orjson.loads(doc)) for doc in documents if doc is not None]
        return [record for record in records if saga_name is None or record.saga_name == saga_name]

    async def _in_status(
        self, status: SagaStatus, limit: int, saga_name: str | None = None
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas of each type per shard from the status indexes, newest first."""
        now = f"({time.time()!r}"
        try:
            members: list[str] = []
            for shard in self.shards:
                names: Any = await self.redis.smembers(self.keys.saga_types(shard))
                for name in names:
                    if saga_name is not None and name.decode() != saga_name:
                        continue
                    index = self.keys.status_index(shard, name.decode(), status)
                    found: Any = await self.redis.zrange(
                        index, "+inf", now, desc=True, byscore=True, offset=0, num=limit
                    )
                    members.extend(member.decode() for member in found)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        chosen = [record for record in await self._records(members) if record.status is status]
        return sorted(chosen, key=lambda record: -record.updated_at)[:limit]

    async def load(self, saga_name: str, saga_id: str) -> Loaded | None:
        try:
            fields: Any = await self.redis.hmget(
                self.keys.saga(member_of(saga_name, saga_id)), "version", "doc"
            )
        except ResponseError as error:
            if str(error).startswith("WRONGTYPE"):
                return None  # a key written by hand or by another layout: no saga here
            raise StoreUnavailable(f"Redis failed: {error}") from error
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
            "" if record.wake_at is None else repr(record.wake_at),
            "1" if record.status.finished else "0",
            finished_ttl_seconds,
            record.saga_name,
            list(SagaStatus).index(record.status) + 1,
            self.tombstone_seconds,
            self.keys.tag(shard),
            orjson.dumps(record.keys).decode(),
            ""
            if record.overdue_step is None
            else self.keys.overdue(shard, record.saga_name, record.overdue_step),
            repr(record.overdue_at or 0.0),
            *(orjson.dumps(entry.to_json()).decode() for entry in outbox),
        ]
        keys = [
            self.keys.saga(member),
            self.keys.outbox(member),
            self.keys.outbox_index(shard),
            self.keys.deadlines(shard),
            self.keys.index(shard),
            self.keys.saga_types(shard),
            self.keys.tombstones(shard),
            *(self.keys.status_index(shard, record.saga_name, status) for status in SagaStatus),
        ]
        try:
            version = await self._commit(keys=keys, args=arguments)
        except NoScriptError:
            version = await self._commit(keys=keys, args=arguments)
        except ResponseError as error:
            if str(error).startswith("WRONGTYPE"):
                raise StoreError(f"saga {member} cannot be committed: {error}") from error
            raise StoreUnavailable(f"Redis could not commit the saga: {error}") from error
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis could not commit the saga: {error}") from error
        return int(version) > 0

    async def pending(self, older_than: float, limit: int = 100) -> list[Pending]:
        found: list[Pending] = []
        for shard, member in await self._scored_upto(self.keys.outbox_index, older_than, limit):
            pending = await self.outbox(*split_member(member))
            if pending.entries:
                found.append(pending)
                continue
            try:
                await self.redis.zrem(self.keys.outbox_index(shard), member)
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

    async def outbox(self, saga_name: str, saga_id: str) -> Pending:
        try:
            stored: Any = await self.redis.lrange(
                self.keys.outbox(member_of(saga_name, saga_id)), 0, -1
            )
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return Pending(
            saga_name,
            saga_id,
            [(raw.decode(), OutboxEntry.from_json(orjson.loads(raw))) for raw in stored],
        )

    async def lease_outbox(self, saga_name: str, saga_id: str, holder: str, seconds: float) -> bool:
        key = self.keys.lease(member_of(saga_name, saga_id))
        try:
            taken = await self.redis.set(key, holder, nx=True, px=int(seconds * 1000))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return bool(taken)

    async def release_outbox(self, saga_name: str, saga_id: str, holder: str) -> None:
        key = self.keys.lease(member_of(saga_name, saga_id))
        try:
            await self._release(keys=[key], args=[holder])
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error

    async def acknowledge(self, saga_name: str, saga_id: str, stored: list[str]) -> None:
        member = member_of(saga_name, saga_id)
        try:
            await self._ack(
                keys=[self.keys.outbox(member), self.keys.outbox_index(self.shards.of(member))],
                args=[member, *stored],
            )
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        due = await self._scored_upto(self.keys.deadlines, now, limit)
        return [split_member(member) for _, member in due]

    async def counts(self) -> dict[tuple[str, SagaStatus], int]:
        """Two round trips per shard: its saga types, then one ZCOUNT per type and status."""
        found: dict[tuple[str, SagaStatus], int] = {}
        now = f"({time.time()!r}"
        try:
            for shard in self.shards:
                names: Any = await self.redis.smembers(self.keys.saga_types(shard))
                wanted = [(name.decode(), status) for name in names for status in SagaStatus]
                if not wanted:
                    continue
                async with self.redis.pipeline(transaction=False) as pipe:
                    for saga_name, status in wanted:
                        pipe.zcount(self.keys.status_index(shard, saga_name, status), now, "+inf")
                    sizes: list[Any] = await pipe.execute()
                for key, size in zip(wanted, sizes, strict=True):
                    found[key] = found.get(key, 0) + int(size)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return found

    async def tombstoned(self, saga_name: str, saga_id: str) -> bool:
        member = member_of(saga_name, saga_id)
        try:
            until: Any = await self.redis.zscore(
                self.keys.tombstones(self.shards.of(member)), member
            )
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return until is not None and float(until) > time.time()

    async def sweep(self, batch: int = SWEEP_BATCH, most: int = 50_000) -> Swept:
        """Shard by shard: the shard's saga types, then the sweep script until it finds nothing
        more to do (at most ``most`` members a shard per call)."""
        sagas = tombstones = 0
        finished = [status for status in SagaStatus if status.finished]
        try:
            for shard in self.shards:
                names: Any = await self.redis.smembers(self.keys.saga_types(shard))
                keys = [
                    self.keys.index(shard),
                    self.keys.tombstones(shard),
                    *(
                        self.keys.status_index(shard, name.decode(), status)
                        for name in sorted(names)
                        for status in finished
                    ),
                ]
                tag = self.keys.tag(shard)
                for _ in range(max(1, most // batch)):
                    gone, buried, looked = await self._sweep(
                        keys=keys, args=[tag, repr(time.time()), batch]
                    )
                    sagas, tombstones = sagas + int(gone), tombstones + int(buried)
                    if int(looked) < batch:
                        break
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return Swept(sagas, tombstones)
