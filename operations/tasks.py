"""The owner of the tasks a part of the service runs in the background, beyond the call that
started them: the change feed's readers, the consumers' workers, the periodic passes, the hub's
pusher and timers, the compensations a cancel starts, the service's connecting to the broker.

Each task is started by name. One that fails is logged once, at ERROR with its name and
traceback, and counted (``operations_background_task_failures_total{task}``); it does not stop the
others. A finished task is forgotten at once, so that only running tasks are held. :meth:`stop`
cancels every task still running and waits for them, so none is left pending when the event loop
closes and no failure goes unseen. Names say what a task does, never which message or client it
serves: they are the metric's label.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from operations.metrics import Registry

T = TypeVar("T")

log = logging.getLogger("operations.tasks")


class BackgroundTasks:
    def __init__(self, metrics: Registry | None = None, logger: logging.Logger = log) -> None:
        """Failures are counted in ``metrics``, if given, and logged on ``logger``."""
        self.metrics = metrics
        self.log = logger
        self._running: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        """The tasks running now."""
        return len(self._running)

    def start(self, name: str, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work, name=name)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        self.log.error("background task %s failed", task.get_name(), exc_info=error)
        if self.metrics is not None:
            self.metrics.background_task_failures.inc(task=task.get_name())

    async def cancel(self, *tasks: asyncio.Task[Any] | None) -> None:
        """Cancels these tasks and waits until they have ended; a failure they end with has been
        logged already."""
        ending = [task for task in tasks if task is not None]
        for task in ending:
            task.cancel()
        if ending:
            await asyncio.wait(ending)

    async def finish(self, seconds: float | None = None) -> None:
        """Waits up to ``seconds`` (None: as long as it takes) for the tasks running now to end
        by themselves."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=seconds)

    async def stop(self) -> None:
        """Cancels every task still running and waits until they have ended, including any
        started while stopping."""
        while self._running:
            await self.cancel(*self._running)
