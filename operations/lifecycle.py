"""Parts of the service that start and stop: started from one ordered list, stopped in reverse.

A :class:`Part` is a name and two coroutine functions. :class:`Parts` starts them in list order
and stops the ones it started in reverse, each stop bounded in time, so that no part holds up the
rest for long and one that fails to stop is logged and passed. :class:`Retrying` is a part whose
own parts need the broker: a background task starts them in order, trying again with a back-off
until all have started (or an error says it is no use), while the rest of the service runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from operations.backoff import Backoff
from operations.tasks import BackgroundTasks

log = logging.getLogger("operations.lifecycle")

STOP_SECONDS = 5.0
"""How long one part may take to stop before the others go on without it."""


async def _nothing() -> None:
    return None


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[], Awaitable[object]] = _nothing
    stop_seconds: float = STOP_SECONDS
    """How long its stop may take; a part made of parts takes as long as they may, together."""

    @classmethod
    def of(cls, name: str, component: Component) -> Part:
        seconds = getattr(component, "stop_seconds", STOP_SECONDS)
        return cls(name, component.start, component.stop, seconds)


class Parts:
    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = list(parts)
        self._started: list[Part] = []

    @property
    def started(self) -> list[str]:
        """The names of the parts started and not stopped, in start order."""
        return [part.name for part in self._started]

    async def start(self) -> None:
        """Starts the parts not started yet, in order; after a failure, starting again goes on
        from the part that failed."""
        for part in self.parts[len(self._started) :]:
            await part.start()
            self._started.append(part)
            log.debug("started the %s", part.name)

    async def stop(self) -> None:
        while self._started:
            part = self._started.pop()
            await _bounded(part)


async def _bounded(part: Part) -> None:
    try:
        await asyncio.wait_for(part.stop(), timeout=part.stop_seconds)
    except TimeoutError:
        log.warning(
            "stopping the %s took longer than %.0fs; going on without it",
            part.name,
            part.stop_seconds,
        )
    except Exception:
        log.exception("stopping the %s failed", part.name)
    else:
        log.debug("stopped the %s", part.name)


class Retrying:
    """Starts ``parts`` in order in a background task, retrying with a back-off (0.5 s up to
    10 s) after an error ``retry`` says is worth it (it is given the error and the delay before
    the next try, to log them); stops them in reverse."""

    def __init__(
        self,
        name: str,
        parts: Sequence[Part],
        retry: Callable[[Exception, float], bool],
        tasks: BackgroundTasks,
    ) -> None:
        self.name = name
        self.parts = Parts(parts)
        self.retry = retry
        self.tasks = tasks
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def stop_seconds(self) -> float:
        """As long as its parts may take to stop, one after the other: a bound of its own,
        shorter, would cut a later part's stop short and leave its tasks running on after the
        connections they use have closed."""
        return STOP_SECONDS + sum(part.stop_seconds for part in self.parts.parts)

    async def start(self) -> None:
        self._stopping.clear()
        self._task = self.tasks.start(self.name, self._keep_starting())

    async def _keep_starting(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while not self._stopping.is_set():
            try:
                await self.parts.start()
                return
            except Exception as error:
                if not self.retry(error, backoff.delay):
                    return
            await backoff.wait(until=self._stopping)

    async def stop(self) -> None:
        self._stopping.set()
        await self.tasks.cancel(self._task)
        await self.parts.stop()
