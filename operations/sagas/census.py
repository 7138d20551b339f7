"""The sagas by status: counted in the store (so every process sees the same numbers) and copied
into the ``operations_saga_instances`` gauge, which ``GET /metrics`` serves."""

from __future__ import annotations

import logging

from operations.metrics import Registry
from operations.periodic import Periodic
from operations.sagas.store import SagaStore

log = logging.getLogger("operations.sagas.census")


class SagaCensus:
    def __init__(self, store: SagaStore, metrics: Registry, every: float = 1.0) -> None:
        self.store = store
        self.metrics = metrics
        self._passes = Periodic("saga-census", self.refresh, every, log, metrics)

    async def refresh(self) -> None:
        for (saga_name, status), count in (await self.store.counts()).items():
            self.metrics.saga_instances.set(count, saga=saga_name, status=status.value)

    async def start(self) -> None:
        self._passes.start()

    async def stop(self) -> None:
        await self._passes.stop()
