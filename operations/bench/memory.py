"""Redis memory figures: bytes per tracked operation, and what the indexes hold once operations
expire under steady traffic.

Both apply operations through :class:`RedisStore`, the same Lua script and keys as the service,
each operation as a command (pending) and then its event (completed), from Pacco-shaped ids (a
hyphenated GUID per operation, per message and per user) for 100 users.

- ``bytes_per_operation``: Redis's ``used_memory`` before and after N operations, divided by N,
  after a warm-up that fills the change stream to its cap (so the stream's share, bounded by
  ``OPERATIONS_STREAM_MAX_LENGTH``, is not counted) and creates the users' indexes. Nothing else
  writes to that Redis meanwhile; each figure is the median of three runs.
- ``steady``: a burst of operations, then a steady trickle with a short time to live, with the
  sweep running as the service runs it; afterwards, how many members the indexes and the
  expiries set hold, against how many operations still live.
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

from ..envelope import Envelope
from ..metrics import Registry
from ..states import MessageKind, State
from ..store import Keys, RedisStore
from ..sweeper import Sweeper

USERS = 100
BATCH = 256
STREAM_CAP = 1_000


def _operations(count: int) -> list[tuple[str, str]]:
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    return [(str(uuid.uuid4()), users[n % USERS]) for n in range(count)]


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
        await apply(store, _operations(operations))
        figures.append((await used_memory(redis) - before) / operations)
        await _delete(redis, f"{prefix}-{run}:*")
    return statistics.median(figures)


@dataclass(frozen=True)
class Steady:
    burst: int
    index_members: int  # members of the indexes and the expiries set, at the end
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
    sweeper = Sweeper(redis, store, None, Registry(), sweep_every)
    length = seconds if seconds is not None else ttl + 3 * sweep_every + 2
    await apply(store, _operations(burst))
    await sweeper.start()
    samples: list[tuple[float, int, int]] = []
    started = next_sample = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < length:
            await apply(store, _operations(per_second))
            if time.monotonic() >= next_sample:
                samples.append(
                    (round(elapsed, 1), await used_memory(redis), await _members(redis, store))
                )
                next_sample += sample_every
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started - elapsed)))
    finally:
        await sweeper.stop()
    members = await _members(redis, store)
    dead = await _dead(redis, store)
    live = await _live(redis, store)
    await _delete(redis, f"{prefix}:*")
    return Steady(burst, members, dead, live, samples)


async def _members(redis: aioredis.Redis, store: RedisStore) -> int:
    total = 0
    async for key in redis.scan_iter(match=f"{store.keys.prefix}:*", count=1_000, _type="zset"):
        total += int(await redis.zcard(key))
    return total


async def _dead(redis: aioredis.Redis, store: RedisStore) -> int:
    dead = 0
    for shard in store.keys.shards:
        async for key in redis.scan_iter(
            match=f"{store.keys.tag(shard)}:*", count=1_000, _type="zset"
        ):
            members: Any = await redis.zrange(key, 0, -1)
            ids = [member.decode() for member in members]
            if key.endswith(b":expiries"):
                ids = [_operation_of(member) for member in ids]
            async with redis.pipeline(transaction=False) as pipe:
                for operation in ids:
                    pipe.exists(store.keys.record_in(shard, operation))
                found: list[Any] = await pipe.execute()
            dead += sum(1 for exists in found if not exists)
    return dead


def _operation_of(member: str) -> str:
    """The operation id in an expiries member, ``LEN:OWNER`` followed by the id."""
    length, rest = member.split(":", 1)
    return rest[int(length) :]


async def _live(redis: aioredis.Redis, store: RedisStore) -> int:
    live = 0
    for shard in store.keys.shards:
        async for key in redis.scan_iter(match=f"{store.keys.tag(shard)}:op:*", count=1_000):
            if not key.endswith(b":history"):
                live += 1
    return live


async def _delete(redis: aioredis.Redis, pattern: str) -> None:
    keys = [key async for key in redis.scan_iter(match=pattern, count=1_000)]
    for start in range(0, len(keys), 1_000):
        await redis.unlink(*keys[start : start + 1_000])
