"""The garbage collector's pauses in the service under a bench, read from its ``GET /metrics``
(``operations_gc_pause_seconds``, which ``operations serve`` observes): how many, how long in
all, and how many stopped it for more than 50 ms, between two readings."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

LONG_SECONDS = 0.05


@dataclass(frozen=True)
class PauseTally:
    count: float = 0.0
    seconds: float = 0.0
    long: float = 0.0  # pauses over LONG_SECONDS

    def since(self, earlier: PauseTally) -> dict[str, float]:
        """The bench's figures for the pauses between ``earlier`` and this reading."""
        return {
            "fanout_service_gc_pauses": self.count - earlier.count,
            "fanout_service_gc_pause_seconds": round(self.seconds - earlier.seconds, 3),
            "fanout_service_gc_pauses_over_50ms": self.long - earlier.long,
        }


async def read(url: str) -> PauseTally:
    """The pauses so far; none when the service does not answer."""
    try:
        return parse(await asyncio.to_thread(_get, f"{url}/metrics"))
    except OSError:
        return PauseTally()


def parse(text: str) -> PauseTally:
    """The pauses a ``GET /metrics`` page counts."""
    count = seconds = within = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "operations_gc_pause_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                seconds = sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == LONG_SECONDS:
                within = sample.value
    return PauseTally(count, seconds, count - within)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        text: str = answer.read().decode()
    return text
