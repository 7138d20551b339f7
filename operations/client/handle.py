"""A handle on one operation: wait for its end (long-polling), follow its changes (Socket.IO),
or cancel its saga."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator

import aiohttp

from operations.backoff import Backoff
from operations.client.stream import Stream
from operations.client.transport import Transport, record
from operations.errors import OperationTimeout
from operations.records import Operation

POLL_SECONDS = 30.0
"""The ``wait`` of each long-poll: one request covers this long while nothing changes."""
RETRY_FIRST, RETRY_CEILING = 0.1, 5.0
"""The back-off between attempts while the service cannot answer (restarting, ``503``), and
while a just-started operation is not recorded yet."""
TRANSIENT = frozenset({502, 503, 504})


class OperationHandle:
    """An operation, by ``id``, from ``OperationsClient.start`` or ``OperationsClient.watch``."""

    def __init__(self, transport: Transport, stream: Stream, operation_id: str, started: bool):
        self.id = operation_id
        self._transport = transport
        self._stream = stream
        self._started = started

    def __repr__(self) -> str:
        return f"OperationHandle({self.id!r})"

    async def result(self, timeout: float | None = None) -> Operation:  # noqa: ASYNC109 - the contract's name
        """The terminal record (``completed`` or ``rejected``), or :class:`OperationTimeout`
        once ``timeout`` seconds have passed. It long-polls ``GET /operations/{id}?wait=N`` with
        ``If-None-Match``, and rides out connection errors, restarts and ``503`` with back-off."""
        deadline = None if timeout is None else time.monotonic() + timeout
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await self._follow(deadline)
        except TimeoutError as error:
            if scope.expired():
                raise OperationTimeout(self.id, timeout or 0.0) from error
            raise

    async def _follow(self, deadline: float | None) -> Operation:
        backoff = Backoff(RETRY_FIRST, RETRY_CEILING)
        known = not self._started  # a started operation may not be recorded yet
        etag: str | None = None
        while True:
            wait = None
            if etag is not None:
                left = POLL_SECONDS if deadline is None else deadline - time.monotonic()
                wait = float(max(1, min(POLL_SECONDS, math.ceil(left))))
            asked = time.monotonic()
            try:
                answer = await self._transport.read(self.id, etag, wait)
            except (aiohttp.ClientError, OSError, TimeoutError):
                await backoff.wait()  # the service restarting, or the network
                continue
            if answer.status == 200:
                current = record(answer)
                if current.state.is_terminal:
                    return current
                known, etag = True, answer.headers.get("ETag", current.etag)
                backoff.reset()
            elif answer.status == 304:
                if time.monotonic() - asked < (wait or 0.0) / 2:
                    await backoff.wait()  # the wait was not kept (a proxy?): no busy loop
                else:
                    backoff.reset()
            elif answer.status == 404 and not known:
                await backoff.wait()
            elif answer.status == 429:
                after = answer.headers.get("Retry-After", "")
                await asyncio.sleep(float(after) if after.isdigit() else RETRY_CEILING)
            elif answer.status in TRANSIENT:
                await backoff.wait()
            else:
                raise self._transport.refused(answer, self.id)

    async def changes(self) -> AsyncGenerator[Operation, None]:
        """Each change of the operation, in order, none twice, ending with the terminal one,
        over Socket.IO (see :mod:`operations.client.stream`). Closing the iteration (leaving
        ``async with contextlib.aclosing(...)``) closes the socket if nothing else uses it."""
        async with self._stream.watching(self.id, self._started) as watcher:
            while True:
                current = await watcher.next()
                yield current
                if current.state.is_terminal:
                    return

    async def cancel(self, reason: str | None = None) -> None:
        """``POST /operations/{id}/cancel``: the saga is rejected with code ``cancelled`` and
        compensated; the operation then ends ``rejected``. Refused with
        :class:`~operations.client.RequestRefused` ``409 not_cancellable`` when it cannot be."""
        await self._transport.cancel(self.id, reason)
