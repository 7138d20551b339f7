"""The sweep: forgets expired operations and sagas in the sorted sets that name them.

Records, histories and finished sagas expire by themselves (Redis key TTLs), but a sorted set's
members cannot: each index would keep the id of every operation and saga ever seen. So every
``OPERATIONS_SWEEP_SECONDS`` one process sweeps:

- the operations whose record has expired leave the global and per-user indexes
  (:meth:`RedisStore.sweep`, found through the owners' indexes, which each shard's owners zset
  schedules);
- the finished sagas whose hash has expired leave the saga index and status indexes, and
  tombstones past their horizon are dropped (:meth:`SagaStore.sweep`).

One process takes each pass, by a lease in Redis that lasts most of the interval; the others
skip it.

Each sweep script touches one shard's keys (one Redis Cluster slot), and sweeping twice is
harmless, so a pass that overlaps another costs time, never correctness.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from operations.errors import StoreUnavailable
from operations.metrics import Registry
from operations.periodic import Periodic
from operations.sagas.store import SagaStore
from operations.store.redis_store import RedisStore

log = logging.getLogger("operations.store.sweeper")


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
    ) -> None:
        self.redis = redis
        self.store = store
        self.sagas = sagas
        self.metrics = metrics
        self.every = every
        self.lease_key = store.keys.sweep_lease
        self.holder = uuid.uuid4().hex
        self._passes = Periodic("sweep", self._pass, every, log, metrics)

    async def start(self) -> None:
        self._passes.start()

    async def stop(self) -> None:
        await self._passes.stop()

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
