"""Counters, gauges and histograms, rendered as Prometheus text at ``GET /metrics``."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable

Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _render_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{key}="{_escape(value)}"' for key, value in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._values: dict[Labels, float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._values[_labels(labels)] += amount

    def value(self, **labels: str) -> float:
        return self._values.get(_labels(labels), 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in sorted(self._values.items()):
            yield f"{self.name}{_render_labels(labels)} {_number(value)}"


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self._values[_labels(labels)] = value


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self._sum += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        cumulative = 0
        for bound, count in zip(self.buckets, self._counts, strict=False):
            cumulative += count
            yield f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}'
        cumulative += self._counts[-1]
        yield f'{self.name}_bucket{{le="+Inf"}} {cumulative}'
        yield f"{self.name}_sum {_number(self._sum)}"
        yield f"{self.name}_count {cumulative}"


class Registry:
    def __init__(self) -> None:
        self.messages = Counter(
            "operations_messages_total", "Messages consumed, by kind and outcome."
        )
        self.dead_letters = Counter(
            "operations_dead_letters_total",
            "Messages copied to the dead-letter queue, by what was applied of them.",
        )
        self.batch_seconds = Histogram(
            "operations_batch_seconds",
            "Time to interpret, apply and settle one batch of deliveries.",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.reconnects = Counter(
            "operations_reconnects_total", "Reconnections to a dependency, by dependency."
        )
        self.sockets = Gauge("operations_sockets", "Socket.IO clients connected to this process.")
        self.socket_refusals = Counter(
            "operations_socket_refusals_total", "Socket.IO connections refused, by reason."
        )
        self.pushes = Counter(
            "operations_pushes_total", "Applied changes emitted to Socket.IO rooms."
        )
        self.push_packets = Counter(
            "operations_push_packets_total",
            "Socket.IO packets queued to client sockets for applied changes: one per change and"
            " recipient.",
        )
        self.syncs = Counter(
            "operations_syncs_total",
            "operations_sync events sent to reconnecting clients, by whether they recovered.",
        )
        self.sagas = Counter(
            "operations_sagas_total", "Saga messages processed, by saga and outcome."
        )
        self.saga_instances = Gauge(
            "operations_saga_instances",
            "Sagas in each status, by saga and status, counted in Redis across processes "
            "(finished ones until they expire).",
        )
        self.saga_messages_published = Counter(
            "operations_saga_messages_published_total",
            "Messages published by saga steps and confirmed by the broker, by message.",
        )
        self.saga_publish_failures = Counter(
            "operations_saga_publish_failures_total",
            "Outbox deliveries that left messages unconfirmed, to be retried.",
        )
        self.jwks_fetches = Counter(
            "operations_jwks_fetches_total", "Identity provider key sets fetched from the JWKS URL."
        )
        self.jwks_fetch_failures = Counter(
            "operations_jwks_fetch_failures_total",
            "Fetches of the identity provider's JWKS that failed (unreachable, timed out, bad).",
        )
        self.store_retries = Counter(
            "operations_store_retries_total", "Batches retried because Redis was unreachable."
        )
        self.swept = Counter(
            "operations_swept_total",
            "Expired entries removed from Redis's indexes by this process's sweeps, by what they "
            "named: operation, saga or tombstone.",
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.messages,
            self.dead_letters,
            self.batch_seconds,
            self.reconnects,
            self.store_retries,
            self.swept,
            self.sockets,
            self.socket_refusals,
            self.pushes,
            self.push_packets,
            self.syncs,
            self.sagas,
            self.saga_instances,
            self.saga_messages_published,
            self.saga_publish_failures,
            self.jwks_fetches,
            self.jwks_fetch_failures,
        ):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
