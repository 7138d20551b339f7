"""A pass of background work every few seconds, in a task of its own, until stopped.

The sweeper, the outbox relay, the deadline watcher, the saga census, the readiness and the
queue counts each run one. A pass that finds Redis unreachable is logged as a wait; any other
failure is logged with its traceback and counted in
``operations_background_pass_failures_total{name}``; either way the next pass comes on time, so
one bad pass never stops the work for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from operations.errors import StoreUnavailable
from operations.metrics import Registry
from operations.tasks import BackgroundTasks


class Periodic:
    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[object]],
        every: float,
        log: logging.Logger,
        metrics: Registry,
    ) -> None:
        self.name = name
        self.work = work
        self.every = every
        self.log = log
        self.metrics = metrics
        self._tasks = BackgroundTasks(metrics, log)

    def start(self) -> None:
        if not self._tasks:
            self._tasks.start(f"operations-{self.name}", self._run())

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.work()
            except StoreUnavailable as error:
                self.log.warning("%s waiting for Redis: %s", self.name, error)
            except Exception:
                self.log.exception("%s: a pass failed", self.name)
                self.metrics.background_pass_failures.inc(name=self.name)
            await asyncio.sleep(self.every)
