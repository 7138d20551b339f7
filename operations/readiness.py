"""Whether the service can do its work: the named checks ``GET /ready`` answers with, and the
``operations_ready`` gauge, set from the same checks by every report and by a pass every few
seconds, so that a scrape sees readiness whether or not anything asks ``/ready``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from operations.metrics import Registry
from operations.periodic import Periodic

log = logging.getLogger("operations.readiness")

READINESS_SECONDS = 5.0
"""How often the readiness pass sets ``operations_ready`` between requests to ``/ready``."""


class Readiness:
    def __init__(
        self,
        checks: Mapping[str, Callable[[], Awaitable[bool]]],
        metrics: Registry,
        every: float = READINESS_SECONDS,
    ) -> None:
        self.checks = dict(checks)
        self.metrics = metrics
        self._passes = Periodic("readiness", self.report, every, log, metrics)

    async def report(self) -> dict[str, bool]:
        results = await asyncio.gather(*(check() for check in self.checks.values()))
        report = dict(zip(self.checks, results, strict=True))
        self.metrics.ready.set(1.0 if all(results) else 0.0)
        return report

    async def start(self) -> None:
        self._passes.start()

    async def stop(self) -> None:
        await self._passes.stop()
