"""The garbage collector of an ``operations serve`` process: its thresholds, and its pauses
measured.

CPython's cycle collector stops the process while it runs, and a full collection walks every
tracked object. Each connected Socket.IO client holds about 170 of them, so at 15,000 clients a
full collection walks 2.5 million objects and stops every push for more than a second. With the
interpreter's thresholds (700, 10, 10) the young generation is collected every 700 new objects,
so the objects of changes still in flight are promoted again and again, and full collections
ran every few seconds under a steady stream of changes. The service's thresholds
(``OPERATIONS_GC_THRESHOLDS``, 50,000, 20 and 10 by default) collect the young generation once
50,000 more objects are alive than after the last collection, which a steady stream of changes
(whose objects are freed by reference counting) seldom reaches. A full collection still comes
once the objects promoted since the last one pass a quarter of those that survived it
(CPython's own rule). A closed Socket.IO connection leaves nothing to the collector: it is
freed as it closes (:mod:`hub.partings`). Every collection's pause is observed in
``operations_gc_pause_seconds``.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from operations.metrics import Histogram

log = logging.getLogger("operations.garbage")


class Pauses:
    """Observes each collection's pause while installed."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.histogram.observe(time.perf_counter() - self._started)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def tune(values: tuple[int, int, int]) -> None:
    gc.set_threshold(*values)
    log.info("garbage collector thresholds %d, %d, %d", *values)
