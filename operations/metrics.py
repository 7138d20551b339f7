"""Counters, gauges and histograms on prometheus-client, rendered at ``GET /metrics``.

Each :class:`Registry` (one per service) has its own ``CollectorRegistry``, never the client's
global default, with the process and garbage-collector collectors beside the service's metrics.
A metric's label names are either declared or taken from its first use. The client's
``*_created`` series (when a series began) are left out: a restart already shows in
``process_start_time_seconds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
"""The media type of what :meth:`Registry.render` returns."""


def _without_created(families: Iterable[Metric]) -> Iterator[Metric]:
    for family in families:
        family.samples = [s for s in family.samples if not s.name.endswith("_created")]
        yield family


Client = TypeVar("Client", prometheus_client.Counter, prometheus_client.Gauge)


class _Labelled(Generic[Client]):
    """A client metric with its label names declared up front, so that a scrape shows it (its
    HELP and TYPE) before its first sample. Each series' child is kept, so that a call costs one
    dict lookup before the client's own increment."""

    def __init__(self, name: str, help_text: str, labels: Iterable[str]) -> None:
        self.name, self.help = name, help_text
        self.label_names = tuple(labels)
        self._metric: Client = self._make(self.label_names)
        self._children: dict[frozenset[tuple[str, str]], Client] = {}

    def _make(self, labels: tuple[str, ...]) -> Client:
        raise NotImplementedError

    def _child(self, labels: dict[str, str]) -> Client:
        key = frozenset(labels.items())
        child = self._children.get(key)
        if child is None:
            metric = self._metric
            child = self._children[key] = metric.labels(**labels) if labels else metric
        return child

    def value(self, **labels: str) -> float:
        """The current value of the series with these labels (0 if it has none yet)."""
        child = self._children.get(frozenset(labels.items()))
        if child is None:
            return 0.0
        for family in child.collect():
            for sample in family.samples:
                if sample.name in (self.name, f"{self.name}_total"):
                    return sample.value
        return 0.0

    def collect(self) -> Iterable[Metric]:
        return _without_created(self._metric.collect())


class Counter(_Labelled[prometheus_client.Counter]):
    def _make(self, labels: tuple[str, ...]) -> prometheus_client.Counter:
        return prometheus_client.Counter(self.name, self.help, labels, registry=None)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)


class Gauge(_Labelled[prometheus_client.Gauge]):
    def _make(self, labels: tuple[str, ...]) -> prometheus_client.Gauge:
        return prometheus_client.Gauge(self.name, self.help, labels, registry=None)

    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(value)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self._metric = prometheus_client.Histogram(name, help_text, buckets=buckets, registry=None)

    def observe(self, value: float) -> None:
        self._metric.observe(value)

    def collect(self) -> Iterable[Metric]:
        return _without_created(self._metric.collect())


class Registry:
    """The service's metrics, as attributes; ``registry`` is what a scrape reads."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(self)
        self.messages = Counter(
            "operations_messages_total",
            "Messages consumed, by kind and outcome.",
            ("kind", "outcome"),
        )
        self.dead_letters = Counter(
            "operations_dead_letters_total",
            "Messages copied to the dead-letter queue, by what was applied of them.",
            ("disposition",),
        )
        self.batch_seconds = Histogram(
            "operations_batch_seconds",
            "Time to interpret, apply and settle one batch of deliveries.",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.gc_pauses = Histogram(
            "operations_gc_pause_seconds",
            "Time the garbage collector stopped the process, one observation per collection"
            " (operations serve only).",
            (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.reconnects = Counter(
            "operations_reconnects_total",
            "Reconnections to a dependency, by dependency.",
            ("dependency",),
        )
        self.sockets = Gauge(
            "operations_sockets", "Socket.IO clients connected to this process.", ()
        )
        self.socket_refusals = Counter(
            "operations_socket_refusals_total",
            "Socket.IO connections refused, by reason.",
            ("reason",),
        )
        self.sockets_unadmitted = Gauge(
            "operations_sockets_unadmitted",
            "Connections open on this process whose user is not known yet (no valid token yet);"
            " each is closed at the initialize timeout.",
            (),
        )
        self.recoveries = Gauge(
            "operations_recoveries",
            "Reconnecting clients whose operations_sync is being read (or waits its turn).",
            (),
        )
        self.recovery_entries = Counter(
            "operations_recovery_entries_total",
            "Change stream entries read to build operations_sync events.",
            (),
        )
        self.recoveries_given_up = Counter(
            "operations_recoveries_given_up_total",
            "Recoveries answered recovered:false at a bound, by bound.",
            ("reason",),
        )
        self.pushes = Counter(
            "operations_pushes_total", "Applied changes emitted to Socket.IO rooms.", ()
        )
        self.push_packets = Counter(
            "operations_push_packets_total",
            "Socket.IO packets sent to client sockets for applied changes: one per change and"
            " recipient.",
            (),
        )
        self.push_writes = Counter(
            "operations_push_packets_written_total",
            "Of those packets, the ones the hub wrote straight to a client's WebSocket"
            " connection rather than through engine.io's queue.",
            (),
        )
        self.syncs = Counter(
            "operations_syncs_total",
            "operations_sync events sent to reconnecting clients, by whether they recovered.",
            ("recovered",),
        )
        self.sagas = Counter(
            "operations_sagas_total",
            "Saga messages processed, by saga and outcome.",
            ("outcome", "saga"),
        )
        self.saga_instances = Gauge(
            "operations_saga_instances",
            "Sagas in each status, by saga and status, counted in Redis across processes "
            "(finished ones until they expire).",
            ("saga", "status"),
        )
        self.sagas_overdue = Gauge(
            "operations_sagas_overdue",
            "Running sagas waiting for a step longer than its objective, by saga and step, "
            "counted in Redis across processes.",
            ("saga", "step"),
        )
        self.saga_operator_actions = Counter(
            "operations_saga_operator_actions_total",
            "Sagas an admin cancelled or retried (POST /sagas/cancel, /sagas/retry, "
            "/operations/{id}/saga/retry), by action and outcome: acted, or why it was skipped.",
            ("action", "outcome"),
        )
        self.saga_messages_published = Counter(
            "operations_saga_messages_published_total",
            "Messages published by saga steps and confirmed by the broker, by message.",
            ("message",),
        )
        self.saga_publish_failures = Counter(
            "operations_saga_publish_failures_total",
            "Outbox deliveries that left messages unconfirmed, to be retried.",
            (),
        )
        self.saga_cancels = Counter(
            "operations_saga_cancel_requests_total",
            "POST /operations/{id}/cancel answers, by outcome: accepted, not_cancellable, "
            "not_found, invalid_body, payload_too_large, broker_unavailable.",
            ("outcome",),
        )
        self.jwks_fetches = Counter(
            "operations_jwks_fetches_total",
            "Identity provider key sets fetched from the JWKS URL.",
            (),
        )
        self.jwks_fetch_failures = Counter(
            "operations_jwks_fetch_failures_total",
            "Fetches of the identity provider's JWKS that failed (unreachable, timed out, bad).",
            (),
        )
        self.message_failures = Counter(
            "operations_message_failures_total",
            "Messages whose processing failed unexpectedly, by consumer and by what followed: "
            "retried or dead_lettered (after the last attempt).",
            ("consumer", "outcome"),
        )
        self.store_retries = Counter(
            "operations_store_retries_total",
            "Batches retried because Redis was unreachable.",
            (),
        )
        self.swept = Counter(
            "operations_swept_total",
            "Expired entries removed from Redis's indexes by this process's sweeps, by what they "
            "named: operation, saga or tombstone.",
            ("what",),
        )
        self.invalid_requests = Counter(
            "operations_http_invalid_requests_total",
            "HTTP requests refused with 400 because a query parameter or the body did not fit "
            "the route's model or its bounds, or with 413 because the body was too large, by "
            "error code.",
            ("code",),
        )

        self.dead_letters_kept = Counter(
            "operations_dead_letters_kept_total",
            "Dead letters taken off a dead-letter queue and kept in Redis, by queue.",
            ("queue",),
        )
        self.dead_letters_dropped = Counter(
            "operations_dead_letters_dropped_total",
            "Kept dead letters dropped to stay within the bounds, by bound: count or age.",
            ("bound",),
        )
        self.dead_letters_redriven = Counter(
            "operations_dead_letters_redriven_total",
            "Dead letters republished to their original exchange and removed, by queue.",
            ("queue",),
        )
        self.dead_letters_discarded = Counter(
            "operations_dead_letters_discarded_total",
            "Dead letters discarded, by queue.",
            ("queue",),
        )
        self.trace_context_refusals = Counter(
            "operations_trace_context_refusals_total",
            "Malformed or oversized traceparent/tracestate headers ignored, by where they came "
            "from (http, amqp).",
            ("source",),
        )

        self.waits = Gauge(
            "operations_waits",
            "Long-polls (GET /operations/{id}?wait) and Prefer: wait starts waiting in this "
            "process, by route: operation or saga_start.",
            ("route",),
        )
        self.wait_refusals = Counter(
            "operations_wait_refusals_total",
            "Waits refused because their user already had OPERATIONS_MAX_WAITS_PER_USER, by "
            "route: operation (answered 429) or saga_start (answered 202 at once).",
            ("route",),
        )
        self.redis_pool = Gauge(
            "operations_redis_pool",
            "The shared Redis connection pool at the scrape: connections in_use, callers "
            "waiting for one, and its size.",
            ("measure",),
        )
        self.background_task_failures = Counter(
            "operations_background_task_failures_total",
            "Background tasks that ended with an unexpected error, by task name.",
            ("task",),
        )
        self.background_pass_failures = Counter(
            "operations_background_pass_failures_total",
            "Passes of periodic background work (the sweep, the outbox relay, the deadline "
            "watcher, ...) that failed with an unexpected error, by name; the next one comes "
            "on time.",
            ("name",),
        )
        self.idempotent_replays = Counter(
            "operations_idempotent_replays_total",
            "Saga starts answered from an earlier request with the same Idempotency-Key, by "
            "route: saga_start or orders.",
            ("route",),
        )
        self.ready = Gauge(
            "operations_ready",
            "1 while every check of GET /ready passes, else 0; set by each /ready and by a pass "
            "every few seconds.",
            (),
        )
        self.queue_messages = Gauge(
            "operations_queue_messages",
            "Messages ready for delivery in each queue this process consumes and in their "
            "dead-letter queues, by queue, as the broker counted them at the last pass.",
            ("queue",),
        )
        self.dead_letters_waiting = Gauge(
            "operations_dead_letters_waiting",
            "Dead letters kept in the workbench now, waiting to be redriven or discarded "
            "(counted in Redis: the same on every process).",
            (),
        )
        self.refreshers: list[Callable[[], None]] = []
        """Called before each scrape, to set gauges read from elsewhere."""

    def collect(self) -> Iterator[Metric]:
        """This registry's own metrics, in order: how ``registry`` reads them."""
        for refresh in self.refreshers:
            refresh()
        for metric in (
            self.messages,
            self.dead_letters,
            self.batch_seconds,
            self.gc_pauses,
            self.reconnects,
            self.store_retries,
            self.message_failures,
            self.swept,
            self.sockets,
            self.socket_refusals,
            self.sockets_unadmitted,
            self.recoveries,
            self.recovery_entries,
            self.recoveries_given_up,
            self.pushes,
            self.push_packets,
            self.push_writes,
            self.syncs,
            self.sagas,
            self.saga_instances,
            self.sagas_overdue,
            self.saga_operator_actions,
            self.saga_messages_published,
            self.saga_publish_failures,
            self.saga_cancels,
            self.jwks_fetches,
            self.jwks_fetch_failures,
            self.invalid_requests,
            self.dead_letters_kept,
            self.dead_letters_dropped,
            self.dead_letters_redriven,
            self.dead_letters_discarded,
            self.trace_context_refusals,
            self.waits,
            self.wait_refusals,
            self.redis_pool,
            self.background_task_failures,
            self.background_pass_failures,
            self.idempotent_replays,
            self.ready,
            self.queue_messages,
            self.dead_letters_waiting,
        ):
            yield from metric.collect()

    def render(self) -> bytes:
        """Everything in ``registry``, in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
