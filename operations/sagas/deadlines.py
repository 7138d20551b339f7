"""The deadline watcher: rejects and compensates sagas whose deadline has passed. Deadlines live in
the store, so they survive a restart; any process may act on one, and the coordinator's version
check makes sure only one does."""

from __future__ import annotations

import logging
import time

from operations.periodic import Periodic
from operations.sagas.coordinator import Coordinator

log = logging.getLogger("operations.sagas.deadlines")


class DeadlineWatcher:
    def __init__(self, coordinator: Coordinator, every: float = 0.25) -> None:
        self.coordinator = coordinator
        self._passes = Periodic("saga-deadlines", self.sweep, every, log, coordinator.metrics)

    async def sweep(self, now: float | None = None) -> int:
        """Expire every saga due by ``now``; returns how many were looked at."""
        moment = time.time() if now is None else now
        due = await self.coordinator.store.due(moment)
        for saga_name, saga_id in due:
            await self.coordinator.expire(saga_name, saga_id, moment)
        return len(due)

    async def start(self) -> None:
        self._passes.start()

    async def stop(self) -> None:
        await self._passes.stop()
