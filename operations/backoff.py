"""Waiting between attempts at something that failed: delays that grow to a ceiling."""

from __future__ import annotations

import asyncio
import contextlib


class Backoff:
    """The delays ``first``, ``first * factor``, ... up to ``ceiling``; :meth:`reset` after a
    success starts again from ``first``.

    ::

        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                return await connect()
            except ConnectionError as error:
                log.warning("retrying in %.1fs: %s", backoff.delay, error)
                await backoff.wait()
    """

    def __init__(self, first: float, ceiling: float, factor: float = 2.0) -> None:
        if not 0 < first <= ceiling or factor < 1:
            raise ValueError(f"not a back-off: first {first}, ceiling {ceiling}, factor {factor}")
        self.first, self.ceiling, self.factor = first, ceiling, factor
        self.delay = first
        """What the next :meth:`wait` sleeps."""
        self.failures = 0
        """Waits since the last reset."""

    async def wait(self, until: asyncio.Event | None = None) -> None:
        """Sleeps the current delay, or less if ``until`` is set meanwhile; the next is longer."""
        if until is None:
            await asyncio.sleep(self.delay)
        else:
            # Waiting on the event, not only on cancellation: a cancellation that lands inside
            # a client library's connect can be swallowed there.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), self.delay)
        self.failures += 1
        self.delay = min(self.delay * self.factor, self.ceiling)

    def reset(self) -> None:
        self.delay, self.failures = self.first, 0
