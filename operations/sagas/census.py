"""The sagas by status: counted in the store (so every process sees the same numbers) and copied
into the ``operations_saga_instances`` gauge, which ``GET /metrics`` serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..errors import StoreUnavailable
from ..metrics import Registry
from .store import SagaStore

log = logging.getLogger("operations.sagas.census")


class SagaCensus:
    def __init__(self, store: SagaStore, metrics: Registry, every: float = 1.0) -> None:
        self.store = store
        self.metrics = metrics
        self.every = every
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        for (saga, status), count in (await self.store.counts()).items():
            self.metrics.saga_instances.set(count, saga=saga, status=status.value)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="operations-saga-census")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except StoreUnavailable as error:
                log.warning("saga census waiting for Redis: %s", error)
            except Exception:
                log.exception("saga census failed")
            await asyncio.sleep(self.every)
