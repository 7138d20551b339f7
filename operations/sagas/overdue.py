"""The overdue watch: once a second, the sagas waiting for a step longer than its objective
(:mod:`.objectives`) are counted into ``operations_sagas_overdue{saga,step}``; each one that has
just become overdue is logged once at WARNING (one process of many tells it: the store hands it
out once); and the ops room hears ``saga_overdue`` when a saga becomes overdue and
``saga_overdue_cleared`` when it no longer is (its step arrived, or it finished).

What the ops room hears is diffed by each process against what it told its own admins last
time, for at most :data:`MAX_LISTED` overdue sagas; the gauge counts them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from operations.metrics import Registry
from operations.periodic import Periodic
from operations.sagas.objectives import Objectives, waiting_since
from operations.sagas.records import SagaRecord
from operations.sagas.store import SagaStore
from operations.timestamps import rfc3339

log = logging.getLogger("operations.sagas.overdue")

Tell = Callable[[str, dict[str, Any]], Awaitable[None]]
OVERDUE = "saga_overdue"
CLEARED = "saga_overdue_cleared"
MAX_LISTED = 1_000
MAX_LOGGED = 100  # a pass; the rest are told in the next ones


class OverdueWatch:
    def __init__(
        self,
        store: SagaStore,
        objectives: Objectives,
        metrics: Registry,
        tell: Tell | None = None,
        every: float = 1.0,
    ) -> None:
        self.store = store
        self.objectives = objectives
        self.metrics = metrics
        self.tell = tell
        self._flagged: dict[str, dict[str, Any]] = {}  # member: what the ops room was told
        self._passes = Periodic("saga-overdue", self.look, every, log, metrics)

    async def look(self) -> None:
        steps = self.objectives.steps
        if not steps:
            return
        counts = await self.store.overdue_counts(steps)
        for (saga_name, step), count in counts.items():
            self.metrics.sagas_overdue.set(count, saga=saga_name, step=step)
        for saga_name, saga_id, step in await self.store.newly_overdue(steps, MAX_LOGGED):
            await self._warn(saga_name, saga_id, step)
        if self.tell is not None and (self._flagged or any(counts.values())):
            await self._tell(await self.store.overdue(steps, MAX_LISTED))

    async def _warn(self, saga_name: str, saga_id: str, step: str) -> None:
        loaded = await self.store.load(saga_name, saga_id)
        record = None if loaded is None else loaded.record
        since = None if record is None else waiting_since(record)
        log.warning(
            "saga %s:%s is overdue: it has waited %s for %s, past its objective of %ss",
            saga_name,
            saga_id,
            "?" if since is None else f"{time.time() - since:.0f}s",
            step,
            self.objectives.of(saga_name, step),
            extra={"correlation_id": None if record is None else record.correlation_id},
        )

    async def _tell(self, overdue: list[SagaRecord]) -> None:
        assert self.tell is not None
        now = {record.key: _notice(record) for record in overdue}
        for member, notice in now.items():
            if self._flagged.get(member) != notice:
                await self.tell(OVERDUE, notice)
        for member, notice in self._flagged.items():
            if member not in now:
                cleared = {name: notice[name] for name in ("saga", "id", "operationId", "step")}
                await self.tell(CLEARED, cleared)
        self._flagged = now

    async def start(self) -> None:
        self._passes.start()

    async def stop(self) -> None:
        await self._passes.stop()


def _notice(record: SagaRecord) -> dict[str, Any]:
    since = waiting_since(record)
    return {
        "saga": record.saga_name,
        "id": record.id,
        "operationId": record.correlation_id,
        "step": record.overdue_step,
        "waitingSince": None if since is None else rfc3339(since),
        "overdueSince": rfc3339(record.overdue_at or time.time()),
    }
