"""Waiting for an operation to change: the long-polls of ``GET /operations/{id}?wait=N`` and
``Prefer: wait=N`` on ``POST /sagas/{name}``.

A waiter holds no Redis connection while it waits. The change feed wakes it with the changed
record's snapshot (:class:`~operations.feed.Watch`), so however many waiters one change wakes,
none of them reads Redis for it. The reads a wait still makes, the first one and a re-read every
:data:`REREAD_SECONDS` or so as a safety net, share at most ``OPERATIONS_WAIT_READS``
connections. A user may have ``OPERATIONS_MAX_WAITS_PER_USER`` waits at once in one process.

When the service begins to stop (:meth:`Waits.end`), every wait ends at once and answers as a
wait that ran out does, and a wait that begins after that does not wait: a long-poll must not
hold a restart for its whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from operations.feed import ChangeFeed
from operations.metrics import Registry
from operations.records import Operation
from operations.store.redis_store import Store

REREAD_SECONDS = 10.0
"""About how often a waiter reads its record again all the same (spread by a quarter either
way, so that waiters that began together do not read together)."""

Check = Callable[[Operation | None], Awaitable[Operation | None]]


class Waits:
    def __init__(
        self,
        store: Store,
        feed: ChangeFeed,
        metrics: Registry,
        per_user: int = 50,
        reads: int = 16,
        reread_seconds: float = REREAD_SECONDS,
    ) -> None:
        self.store = store
        self.feed = feed
        self.metrics = metrics
        self.per_user = per_user
        self.reread_seconds = reread_seconds
        self._reads = asyncio.Semaphore(reads)
        self._by_user: Counter[str] = Counter()
        self._by_route: Counter[str] = Counter()
        self._stopping = False
        self._waiting: set[asyncio.Timeout] = set()

    async def start(self) -> None:
        self._stopping = False

    async def stop(self) -> None:
        """As a part of the service: the first to stop, before what the waits read from."""
        self.end()

    def end(self) -> None:
        """Ends every wait now, each with the record as it last saw it, and makes later waits
        answer at once. Called in the event loop when the service begins to stop."""
        if self._stopping:  # every wait has been ended, and none has begun since
            return
        self._stopping = True
        now = asyncio.get_running_loop().time()
        for waiting in self._waiting:
            waiting.reschedule(now)

    @contextlib.contextmanager
    def admitted(self, who: str, route: str) -> Iterator[bool]:
        """Whether ``who`` may wait now (False past the cap, counted as a refusal); the wait
        counts against the cap until the block ends."""
        if self._by_user[who] >= self.per_user:
            self.metrics.wait_refusals.inc(route=route)
            yield False
            return
        self._by_user[who] += 1
        self._by_route[route] += 1
        self.metrics.waits.set(self._by_route[route], route=route)
        try:
            yield True
        finally:
            self._by_user[who] -= 1
            if not self._by_user[who]:
                del self._by_user[who]
            self._by_route[route] -= 1
            self.metrics.waits.set(self._by_route[route], route=route)

    async def read(self, operation_id: str) -> Operation | None:
        """The record, read on one of the connections waiters share."""
        async with self._reads:
            return await self.store.get(operation_id)

    async def until(
        self,
        operation_id: str,
        seconds: float,
        settled: Callable[[Operation], bool],
        check: Check | None = None,
        until_created: bool = False,
    ) -> Operation | None:
        """The record once it is final or ``settled`` holds for it, or as it stands after
        ``seconds``; None when it is unknown or expired, or ``check`` turns it away. ``check``
        sees the first record and every newer one before it is taken. With ``until_created``,
        an operation not recorded yet is waited for too."""
        deadline = time.monotonic() + seconds
        watch = self.feed.watch(operation_id)
        try:
            # Read after watching, so that a change between the two is not missed.
            current = await self.read(operation_id)
            if check is not None:
                current = await check(current)
            if self._stopping:
                return current
            async with self._ended_by_stop():
                while until_created if current is None else not _done(current, settled):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    snapshot = await watch.changed(min(remaining, self._reread()))
                    if snapshot is not None:
                        fresh: Operation | None = Operation.from_snapshot(snapshot)
                    elif time.monotonic() < deadline:
                        fresh = await self.read(operation_id)
                    else:
                        break
                    if fresh is None and until_created:
                        continue
                    if (
                        fresh is not None
                        and current is not None
                        and fresh.version <= current.version
                    ):
                        continue
                    current = fresh if check is None else await check(fresh)
        finally:
            self.feed.unwatch(watch)
        return current

    @contextlib.asynccontextmanager
    async def _ended_by_stop(self) -> AsyncIterator[None]:
        """The block, ended early and quietly by :meth:`end`, whatever it awaits then. A
        timeout with no deadline of its own, that :meth:`end` moves to now."""
        try:
            async with asyncio.timeout(None) as stopped:
                self._waiting.add(stopped)
                try:
                    yield
                finally:
                    self._waiting.discard(stopped)
        except TimeoutError:
            if not stopped.expired():
                raise

    def _reread(self) -> float:
        return self.reread_seconds * random.uniform(0.75, 1.25)


def _done(record: Operation, settled: Callable[[Operation], bool]) -> bool:
    return record.state.is_terminal or settled(record)
