"""The running service: settings in, components wired in data-flow order, one ASGI app out.

RabbitMQ ─▶ Consumer ─▶ Pipeline (envelope ▸ state ▸ store) ─▶ Redis (record + change stream)
                                                                   │        ▲
HTTP readers ◀── OperationsApi ◀──────────── ChangeFeed ◀──────────┘        │ Sweeper: expired
                                                   └──▶ Socket.IO hub       ids leave indexes

Its parts start from one ordered list (:attr:`Service.parts`) and stop in reverse (see
:mod:`operations.lifecycle`). Those that need RabbitMQ start last, in a background task that keeps
trying while HTTP already answers (``/ready`` says 503 until they have started).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping

from aiormq.exceptions import AMQPError
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from hub import Hub
from hub.page import browser_routes
from operations import assembly
from operations.amqp import frames
from operations.amqp.catalogue import Catalogue
from operations.amqp.connections import Connections
from operations.amqp.depths import QueueDepths
from operations.deadletters.redrive import RedrivePublisher, Workbench
from operations.errors import StoreUnavailable, TopologyMismatch
from operations.http.openapi import ENDPOINTS
from operations.http.operations import OperationsApi
from operations.lifecycle import Part, Parts, Retrying
from operations.metrics import Registry
from operations.pacco.openapi import ORDER_ENDPOINTS
from operations.pacco.orders import OrdersApi
from operations.readiness import Readiness
from operations.sagas.http_start import SagaStarter
from operations.settings import Settings
from operations.store.redis_client import pool_usage
from operations.store.redis_store import LayoutMismatch
from operations.store.sweeper import Sweeper
from operations.tasks import BackgroundTasks
from operations.tracing import context as tracecontext
from operations.waits import Waits

SERVED_ENDPOINTS = (*ENDPOINTS, *ORDER_ENDPOINTS)
"""The route table of what the service serves: the OpenAPI document at ``GET /openapi.json``."""

log = logging.getLogger("operations.service")


class Service:
    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        """``environ`` is where saga types read their own settings (the process's environment
        unless given)."""
        self.settings = settings
        frames.configure(settings.amqp_bulk_frames)  # before any AMQP connection is opened
        self.catalogue = catalogue = Catalogue.load(settings.messages_file)
        self.metrics = metrics = Registry()
        self.tasks = BackgroundTasks(metrics, log)
        self.connections = Connections(settings.amqp_url)
        self.store = assembly.store(settings)
        self.feed = assembly.feed(settings, self.store, metrics)
        self.consumer = assembly.tracking_consumer(
            settings, self.connections, catalogue, self.store, metrics
        )
        self.verifier = assembly.verifier(settings, metrics)
        self.waits = Waits(
            self.store, self.feed, metrics, settings.max_waits_per_user, settings.wait_reads
        )
        self.api = self._operations_api()
        self.hub = self._socket_hub()
        environ = os.environ if environ is None else environ
        self.sagas = assembly.sagas(
            settings, catalogue, self.store, metrics, environ, self.connections, self.hub.tell_ops
        )
        sagas = self.sagas.store if self.sagas is not None else None
        self.sweeper = Sweeper(self.store.redis, self.store, sagas, metrics, settings.sweep_seconds)
        self.dead_letters = assembly.dead_letters(settings, self.store)
        self.intake = assembly.intake(settings, self.connections, self.dead_letters, metrics)
        self.depths = QueueDepths(self.connections, self._counted_queues(), metrics)
        self.redrive_publisher = RedrivePublisher(self.connections)
        self.workbench = Workbench(self.dead_letters, self.redrive_publisher, metrics)
        self.http = assembly.http_app(settings, self._routes(), self._lifespan, metrics)
        self.asgi = self.hub.asgi(self.http)
        self.parts = Parts(self._parts())
        self._layout_error: LayoutMismatch | None = None
        self.fatal: TopologyMismatch | None = None
        self.on_fatal: Callable[[], None] = lambda: None
        metrics.refreshers.append(self._count_pool)
        refusals = metrics.trace_context_refusals
        tracecontext.count_refusals(lambda source: refusals.inc(source=source))

    def _parts(self) -> list[Part]:
        """What starts, in order; what stops, in reverse."""
        broker = [
            Part("store layout", self.store.claim_layout),
            Part.of("tracking consumer", self.consumer),
            *([Part.of("sagas", self.sagas)] if self.sagas is not None else []),
            # After the consumers: they declare the dead-letter queues' arguments first.
            *([Part.of("dead-letter intake", self.intake)] if self.intake is not None else []),
            Part.of("queue depths", self.depths),
        ]
        provider = self.verifier.provider
        return [
            Part("store connection", stop=self.store.close),
            Part("feed connection", stop=self.feed.redis.aclose),
            Part("AMQP connections", stop=self.connections.close),
            # Stopped after the hub and the routes, which verify tokens with its keys.
            *([Part.of("identity provider keys", provider)] if provider is not None else []),
            Part.of("feed", self.feed),
            Part.of("hub", self.hub),
            Part.of("sweeper", self.sweeper),
            Part("redrive publisher", stop=self.redrive_publisher.close),
            Part.of(
                "broker parts", Retrying("operations-connect", broker, self._retry, self.tasks)
            ),
            Part("background tasks", stop=self.tasks.stop),
            Part.of("readiness", self.api.readiness),
            # The first to stop: every wait answers at once, before what it reads from stops.
            Part.of("waits", self.waits),
        ]

    def _counted_queues(self) -> list[str]:
        """The queues whose messages ``operations_queue_messages`` counts: those consumed here,
        and their dead-letter queues."""
        consumed = [
            self.settings.queue,
            *([self.settings.saga_queue] if self.sagas is not None else []),
        ]
        return [*consumed, *self.settings.dead_letter_queues]

    def _socket_hub(self) -> Hub:
        settings = self.settings
        return Hub(
            self.verifier,
            self.feed,
            self.metrics,
            allowed_origins=settings.allowed_origins,
            max_sockets_per_user=settings.max_sockets_per_user,
            recovery_max_entries=settings.recovery_max_entries,
        )

    def _operations_api(self) -> OperationsApi:
        readiness = Readiness(
            {
                "rabbitmq": self._broker_ready,
                "redis": self._store_ready,
                "redis-pool": self._pool_ready,
                # False while a consumer's messages keep failing unexpectedly.
                "consumer": self._consumer_ready,
                "saga-consumer": self._saga_consumer_ready,
            },
            self.metrics,
        )
        return OperationsApi(
            self.store,
            self.feed,
            self.verifier,
            readiness,
            self.metrics,
            anonymous_reads=self.settings.anonymous_reads,
            endpoints=SERVED_ENDPOINTS,
            waits=self.waits,
        )

    def _routes(self) -> list[BaseRoute]:
        def order_routes(starter: SagaStarter) -> list[BaseRoute]:
            return list(OrdersApi(self.verifier, starter).routes)

        return [
            *assembly.saga_routes(
                self.verifier,
                self.sagas,
                self.api,
                self.metrics,
                self.tasks,
                order_routes,
                assembly.idempotency(self.settings, self.store, self.metrics),
            ),
            *self.api.routes,
            *assembly.dead_letter_routes(self.verifier, self.dead_letters, self.workbench),
            *browser_routes(),
        ]

    async def _consumer_ready(self) -> bool:
        return not self.consumer.failing

    async def _saga_consumer_ready(self) -> bool:
        return self.sagas is None or self.sagas.consuming

    async def _broker_ready(self) -> bool:
        return self.consumer.ready and (self.sagas is None or self.sagas.ready)

    async def _store_ready(self) -> bool:
        if self._layout_error is not None:
            return False
        if not await self._pool_ready():  # a ping would only queue behind everyone else
            return not self.consumer.store_down
        return not self.consumer.store_down and await self.store.ping()

    async def _pool_ready(self) -> bool:
        usage = pool_usage(self.store.redis)
        return usage is None or not usage.saturated

    def _count_pool(self) -> None:
        usage = pool_usage(self.store.redis)
        if usage is not None:
            for measure, value in usage._asdict().items():
                self.metrics.redis_pool.set(value, measure=measure)

    async def start(self) -> None:
        if self.settings.uses_development_secret:
            log.warning(
                "OPERATIONS_JWT_SECRET is not set: tokens are signed with the public development"
                " secret; set it before exposing the service"
            )
        await self.parts.start()

    def _retry(self, error: Exception, delay: float) -> bool:
        """Whether starting the broker parts again may help. With the wrong shard count nothing
        is consumed, and /ready says so. A queue or an exchange that exists with another
        type or other arguments stops the service (see ``on_fatal``): no retry helps."""
        if isinstance(error, LayoutMismatch):
            log.critical("not consuming: %s", error)
            self._layout_error = error
            return False
        if isinstance(error, TopologyMismatch):
            log.critical("stopping: %s", error)
            self.fatal = error
            self.on_fatal()
            return False
        if isinstance(error, StoreUnavailable):
            log.warning("Redis not reachable yet (%s); retrying in %.1fs", error, delay)
            return True
        if isinstance(error, AMQPError | ConnectionError | OSError | TimeoutError):
            log.warning("RabbitMQ not reachable yet (%s); retrying in %.1fs", error, delay)
            return True
        raise error

    def begin_stop(self) -> None:
        """What must happen as soon as the service begins to stop, before the server waits for
        the requests in flight to end: every long-poll and ``Prefer: wait`` start answers now as
        one whose wait ran out, later ones do not wait, and the Socket.IO clients are
        disconnected so that they reconnect elsewhere with their cursor."""
        self.waits.end()
        self.hub.close_connections()

    async def stop(self) -> None:
        """Stops the parts in reverse order; no part may hold up the rest for long."""
        await self.parts.stop()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()
