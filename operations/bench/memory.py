"""Redis memory figures: bytes per tracked operation, and what the indexes hold once operations
expire under steady traffic.

Both apply operations through :class:`RedisStore`, the same Lua script and keys as the service,
each operation as a command (pending) and then its event (completed), from Pacco-shaped ids (a
hyphenated GUID per operation, per message and per user) for 100 users.

- ``bytes_per_operation``: Redis's ``used_memory`` before and after N operations, divided by N,
  after a warm-up that fills the change stream to its cap (so the stream's share, bounded by
  ``OPERATIONS_STREAM_MAX_LENGTH``, is not counted) and creates the users' indexes. Nothing else
  writes to that Redis meanwhile; each figure is the median of three runs. It prints where the
  bytes go (:func:`footprint`): Redis's ``MEMORY USAGE`` and ``OBJECT ENCODING`` of each key the
  last operation of the last run touches, a set's or stream's share divided by its members.
- ``steady``: a burst of operations, then a steady trickle with a short time to live, with the
  sweep running as the service runs it; afterwards, how many members the indexes hold, against
  how many operations still live.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from operations.envelope import Envelope
from operations.metrics import Registry
from operations.states import MessageKind, State
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from operations.store.sweeper import Sweeper

USERS = 100
BATCH = 256
STREAM_CAP = 1_000


def _users() -> list[str]:
    return [str(uuid.uuid4()) for _ in range(USERS)]


def _operations(count: int, users: list[str] | None = None) -> list[tuple[str, str]]:
    users = users or _users()
    return [(str(uuid.uuid4()), users[n % len(users)]) for n in range(count)]


async def apply(store: RedisStore, operations: Sequence[tuple[str, str]]) -> None:
    """Each operation's command, then its event, a batch at a time as the consumer sends them."""
    for start in range(0, len(operations), BATCH):
        chunk = operations[start : start + BATCH]
        for state, kind, message in (
            (State.PENDING, MessageKind.COMMAND, "create_order"),
            (State.COMPLETED, MessageKind.EVENT, "order_created"),
        ):
            envelopes = [
                Envelope(
                    message,
                    "orders",
                    kind,
                    state,
                    operation,
                    str(uuid.uuid4()),
                    user,
                    "create_order",
                )
                for operation, user in chunk
            ]
            await store.apply(envelopes)


async def used_memory(redis: aioredis.Redis) -> int:
    info: Any = await redis.info("memory")
    return int(info["used_memory"])


async def bytes_per_operation(
    redis: aioredis.Redis, prefix: str, operations: int = 20_000, runs: int = 3
) -> float:
    figures = []
    for run in range(runs):
        store = RedisStore(redis, 3_600, STREAM_CAP, Keys(f"{prefix}-{run}"))
        await apply(store, _operations(max(2 * STREAM_CAP, USERS * 10)))  # warm-up
        before = await used_memory(redis)
        measured = _operations(operations)
        await apply(store, measured)
        figures.append((await used_memory(redis) - before) / operations)
        if run == runs - 1:
            print_footprint(await footprint(redis, store, *measured[-1]))
        await _delete(redis, f"{prefix}-{run}:*")
    return statistics.median(figures)


@dataclass(frozen=True)
class Share:
    """One key's part of an operation: ``MEMORY USAGE`` (value, key name and its entry in the
    keyspace) divided by ``members`` when the key is shared: a set's members, a stream's entries,
    the owners set's operations (those of the shard's global index)."""

    what: str
    key: str
    encoding: str  # OBJECT ENCODING, or "-" when the key is absent
    usage: int
    members: int

    @property
    def bytes(self) -> float:
        return self.usage / self.members if self.members else 0.0


async def footprint(
    redis: aioredis.Redis, store: RedisStore, operation: str, user: str
) -> list[Share]:
    """Each key ``operation`` (owned by ``user``) has stored, with its share of the memory."""
    keys = store.keys
    shard = keys.shard(operation)
    named: list[tuple[str, bytes | str, Any]] = [
        ("record (hash)", keys.record(operation), None),
        ("owner's index (zset)", keys.user_index(user, shard), redis.zcard),
        ("global index (zset)", keys.index(shard), redis.zcard),
        # One member per owner, not per operation: its share is per operation of the shard.
        ("owners (zset)", keys.owners(shard), lambda _: redis.zcard(keys.index(shard))),
        ("change stream, capped", keys.changes(shard), redis.xlen),
    ]
    shares = []
    for what, key, count in named:
        usage: Any = await redis.memory_usage(key, samples=0)
        if usage is None:
            shares.append(Share(what, _shown(key), "-", 0, 0))
            continue
        encoding: Any = await redis.object("encoding", key)
        members = 1 if count is None else int(await count(key))
        text = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        shares.append(Share(what, _shown(key), text, int(usage), members))
    return shares


def _shown(key: bytes | str) -> str:
    return key if isinstance(key, str) else key.decode(errors="backslashreplace")


def print_footprint(shares: list[Share]) -> None:
    """The table of docs/performance.md's "Where the bytes go"; the stream is not counted in
    ``redis_bytes_per_operation`` (it is capped)."""
    print("where one operation's bytes go (MEMORY USAGE, a shared key's over the last column):")
    print(f"  {'key':<24} {'encoding':<10} {'bytes':>8} {'over':>8}")
    counted = 0.0
    for share in shares:
        print(f"  {share.what:<24} {share.encoding:<10} {share.bytes:>8.0f} {share.members:>8}")
        if not share.what.startswith("change stream"):
            counted += share.bytes
    print(f"  {'sum but the stream':<24} {'':<10} {counted:>8.0f}")


@dataclass(frozen=True)
class Steady:
    burst: int
    index_members: int  # members of the indexes, at the end
    dead_members: int  # of those, the ones naming an operation whose record has expired
    live_operations: int  # operations whose record still lives, at the end
    samples: list[tuple[float, int, int]]  # (seconds, used_memory, index members)


async def steady(
    redis: aioredis.Redis,
    prefix: str,
    burst: int = 20_000,
    ttl: int = 5,
    per_second: int = 20,
    seconds: float | None = None,
    sweep_every: float = 1.0,
    sample_every: float = 1.0,
) -> Steady:
    """``burst`` operations at once, then ``per_second`` a second for ``seconds`` (by default
    the time to live plus three sweeps and a margin), sweeping every ``sweep_every`` seconds."""
    store = RedisStore(redis, ttl, STREAM_CAP, Keys(prefix))
    # Keys of its own, nothing written before the sweep: no need to walk the keyspace for that.
    sweeper = Sweeper(redis, store, None, Registry(), sweep_every)
    length = seconds if seconds is not None else ttl + 3 * sweep_every + 2
    users = _users()
    await apply(store, _operations(burst, users))
    await sweeper.start()
    samples: list[tuple[float, int, int]] = []
    started = next_sample = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < length:
            await apply(store, _operations(per_second, users))
            if time.monotonic() >= next_sample:
                members = sum((await _members(redis, store, users)).values())
                samples.append((round(elapsed, 1), await used_memory(redis), members))
                next_sample += sample_every
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started - elapsed)))
    finally:
        await sweeper.stop()
    indexes = await _members(redis, store, users)
    dead = await _dead(redis, store, list(indexes))
    live = await _live(redis, store)
    await _delete(redis, f"{prefix}:*")
    return Steady(burst, sum(indexes.values()), dead, live, samples)


async def _members(
    redis: aioredis.Redis, store: RedisStore, users: list[str]
) -> dict[tuple[str, int], int]:
    """Each index the run writes, with its size (no keyspace scan: the
    figures must not depend on what else the Redis holds)."""
    keys = store.keys
    names = [
        (name, shard)
        for shard in keys.shards
        for name in (
            keys.index(shard),
            *(keys.user_index(user, shard) for user in users),
        )
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for name, _ in names:
            pipe.zcard(name)
        sizes: list[Any] = await pipe.execute()
    return {name: int(size) for name, size in zip(names, sizes, strict=True)}


async def _dead(redis: aioredis.Redis, store: RedisStore, indexes: list[tuple[str, int]]) -> int:
    dead = 0
    for index, shard in indexes:
        members: Any = await redis.zrange(index, 0, -1)
        async with redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(store.keys.record_of(shard, member))
            found: list[Any] = await pipe.execute()
        dead += sum(1 for exists in found if not exists)
    return dead


async def _live(redis: aioredis.Redis, store: RedisStore) -> int:
    """Operations whose record lives: every live one is in its shard's global index."""
    live = 0
    for shard in store.keys.shards:
        members: Any = await redis.zrange(store.keys.index(shard), 0, -1)
        async with redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.exists(store.keys.record_of(shard, member))
            found: list[Any] = await pipe.execute()
        live += sum(1 for exists in found if exists)
    return live


async def _delete(redis: aioredis.Redis, pattern: str) -> None:
    keys = [key async for key in redis.scan_iter(match=pattern, count=1_000)]
    for start in range(0, len(keys), 1_000):
        await redis.unlink(*keys[start : start + 1_000])
