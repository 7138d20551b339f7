"""The deadline watcher: rejects and compensates sagas whose deadline has passed. Deadlines live in
the store, so they survive a restart; any process may act on one, and the coordinator's version
check makes sure only one does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..errors import StoreUnavailable
from .coordinator import Coordinator

log = logging.getLogger("operations.sagas.deadlines")


class DeadlineWatcher:
    def __init__(self, coordinator: Coordinator, every: float = 0.25) -> None:
        self.coordinator = coordinator
        self.every = every
        self._task: asyncio.Task[None] | None = None

    async def sweep(self, now: float | None = None) -> int:
        """Expire every saga due by ``now``; returns how many were looked at."""
        moment = time.time() if now is None else now
        due = await self.coordinator.store.due(moment)
        for saga, saga_id in due:
            await self.coordinator.expire(saga, saga_id, moment)
        return len(due)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="operations-saga-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except StoreUnavailable as error:
                log.warning("deadline watcher waiting for Redis: %s", error)
            except Exception:
                log.exception("deadline sweep failed")
            await asyncio.sleep(self.every)
