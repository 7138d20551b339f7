"""The sweep: forgets expired operations and sagas in the sorted sets that name them.

Records, histories and finished sagas expire by themselves (Redis key TTLs), but a sorted set's
members cannot: each index would keep the id of every operation and saga ever seen. So every
``OPERATIONS_SWEEP_SECONDS`` one process sweeps:

- the operations whose record has expired leave the global and per-user indexes
  (:meth:`RedisStore.sweep`, found through each shard's expiries zset);
- the finished sagas whose hash has expired leave the saga index and status indexes, and
  tombstones past their horizon are dropped (:meth:`SagaStore.sweep`).

One process takes each pass, by a lease in Redis that lasts most of the interval; the others
skip it.

Operations indexed by a version without the sweep have no member in the expiries set. Once per
deployment, one process looks for them (a global index larger than its expiries set) and, if
there are any, walks every index in the background (``clear_legacy``) and removes the ids whose
record is gone; then it records that it is done (``P:legacy-swept``).

Each sweep script touches one shard's keys (one Redis Cluster slot), and sweeping twice is
harmless, so a pass that overlaps another costs time, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .errors import StoreUnavailable
from .metrics import Registry
from .periodic import Periodic
from .sagas.store import SagaStore
from .store import RedisStore

log = logging.getLogger("operations.sweeper")


@dataclass(frozen=True)
class SweepResult:
    operations: int
    sagas: int
    tombstones: int


class Sweeper:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: RedisStore,
        sagas: SagaStore | None,
        metrics: Registry,
        every: float,
        clear_legacy: bool = True,
    ) -> None:
        self.redis = redis
        self.store = store
        self.sagas = sagas
        self.metrics = metrics
        self.every = every
        self.lease_key = f"{store.keys.prefix}:sweep-lease"
        self.holder = uuid.uuid4().hex
        self._passes = Periodic("sweep", self._pass, every, log)
        self._legacy: asyncio.Task[None] | None = None
        self._clears_legacy = clear_legacy

    async def start(self) -> None:
        self._passes.start()
        if self._clears_legacy:
            self._legacy = asyncio.create_task(self._clear_legacy_once(), name="operations-legacy")

    async def stop(self) -> None:
        if self._legacy is not None:
            self._legacy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._legacy
            self._legacy = None
        await self._passes.stop()

    async def clear_legacy(self, chunk: int = 500) -> int:
        """Removes, from every index, the operation ids whose record is gone; returns how many.
        Each chunk is one script (:meth:`RedisStore.prune`), so no live id is ever removed."""
        keys = self.store.keys
        indexes = [(keys.index(shard), shard) for shard in keys.shards]
        async for key in self.redis.scan_iter(match=f"{keys.prefix}:{{*}}:user:*", count=1_000):
            name = key.decode()
            shard = name[len(keys.prefix) + 2 : name.index("}")]
            if shard.isdigit() and int(shard) < len(keys.shards):
                indexes.append((name, int(shard)))
        removed = 0
        for index, shard in indexes:
            ids: list[str] = []
            async for member, _ in self.redis.zscan_iter(index, count=chunk):
                ids.append(member.decode())
                if len(ids) >= chunk:
                    removed += await self.store.prune(index, shard, ids)
                    ids.clear()
            removed += await self.store.prune(index, shard, ids)
        return removed

    async def _clear_legacy_once(self) -> None:
        """``clear_legacy`` once per deployment, by one process; retried at the next start if
        it fails."""
        done_key = f"{self.store.keys.prefix}:legacy-swept"
        try:
            if await self.redis.exists(done_key) or not await self.redis.set(
                f"{done_key}:lease", self.holder, nx=True, ex=3_600
            ):
                return
            if not await self._has_legacy():
                await self.redis.set(done_key, "1")
                return
            removed = await self.clear_legacy()
            await self.redis.set(done_key, "1")
            if removed:
                self.metrics.swept.inc(removed, what="operation")
            log.info("indexes written before the sweep cleared: %d expired id(s) removed", removed)
        except (RedisError, OSError, StoreUnavailable) as error:
            log.warning("clearing indexes written before the sweep failed: %s", error)

    async def _has_legacy(self) -> bool:
        """Whether some shard's global index holds more ids than its expiries set: ids that an
        earlier version indexed (every id this version indexes has an expiries member). Data
        this version wrote, or none at all, needs no walk over the keyspace."""
        keys = self.store.keys
        for shard in keys.shards:
            indexed: Any = await self.redis.zcard(keys.index(shard))
            scored: Any = await self.redis.zcard(keys.expiries(shard))
            if int(indexed) > int(scored):
                return True
        return False

    async def sweep(self) -> SweepResult:
        """One sweep of everything, now, whoever holds the lease."""
        operations = await self.store.sweep()
        sagas = tombstones = 0
        if self.sagas is not None:
            swept = await self.sagas.sweep()
            sagas, tombstones = swept.sagas, swept.tombstones
        result = SweepResult(operations, sagas, tombstones)
        for what, count in (("operation", operations), ("saga", sagas), ("tombstone", tombstones)):
            if count:
                self.metrics.swept.inc(count, what=what)
        if operations or sagas or tombstones:
            log.info(
                "swept %d expired operation(s), %d saga(s), %d tombstone(s)",
                operations,
                sagas,
                tombstones,
            )
        return result

    async def _pass(self) -> SweepResult | None:
        if not await self._lease():
            return None
        return await self.sweep()

    async def _lease(self) -> bool:
        """Take this interval's pass, unless another process has it."""
        try:
            taken: Any = await self.redis.set(
                self.lease_key, self.holder, nx=True, px=int(self.every * 1000 * 0.9) or 1
            )
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return bool(taken)
