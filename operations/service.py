"""The running service: settings in, components wired in data-flow order, one ASGI app out.

RabbitMQ ─▶ Consumer ─▶ Pipeline (envelope ▸ state ▸ store) ─▶ Redis (record + change stream)
                                                                   │        ▲
HTTP readers ◀── OperationsApi ◀──────────── ChangeFeed ◀──────────┘        │ Sweeper: expired
                                                   └──▶ Socket.IO hub       ids leave indexes
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

from aiormq.exceptions import AMQPError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from hub import Hub
from hub.page import browser_routes
from operations.amqp import frames
from operations.amqp.catalogue import Catalogue
from operations.amqp.consumer import Consumer
from operations.amqp.publisher import AmqpPublisher
from operations.auth.jwks import ProviderKeys
from operations.auth.tokens import TokenVerifier
from operations.backoff import Backoff
from operations.deadletters.http import DeadLettersApi
from operations.deadletters.intake import DeadLetterIntake
from operations.deadletters.redrive import RedrivePublisher, Workbench
from operations.deadletters.store import DeadLetterStore
from operations.errors import QueueMismatch, StoreUnavailable
from operations.feed import ChangeFeed
from operations.http.openapi import ENDPOINTS
from operations.http.operations import OperationsApi, Readiness
from operations.http.responses import EXCEPTION_HANDLERS
from operations.keys import Keys
from operations.metrics import Registry
from operations.pacco.openapi import ORDER_ENDPOINTS
from operations.pacco.orders import OrdersApi
from operations.pipeline import Pipeline
from operations.redis_client import open_redis, pool_usage
from operations.sagas.coordinator import Coordinator
from operations.sagas.http import SagasApi
from operations.sagas.http_start import SagaStartApi, SagaStarter
from operations.sagas.runtime import SagaRuntime
from operations.settings import Settings
from operations.shards import Shards
from operations.store import LayoutMismatch, RedisStore
from operations.sweeper import Sweeper
from operations.tracing import context as tracecontext
from operations.tracing.http import TracingMiddleware
from operations.waits import Waits

SERVED_ENDPOINTS = (*ENDPOINTS, *ORDER_ENDPOINTS)
"""The route table of what the service serves: the OpenAPI document at ``GET /openapi.json``."""

log = logging.getLogger("operations.service")


class Service:
    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        """``environ`` is where saga types read their own settings (the process's environment
        unless given)."""
        self.settings = settings
        # Before any connection is opened: aiormq picks its frame receiver when it connects.
        frames.configure(settings.amqp_bulk_frames)
        self.catalogue = Catalogue.load(settings.messages_file)
        self.metrics = Registry()
        # One bounded pool (on one server) for the store, the sagas, the dead letters and the hub.
        self.store = RedisStore(
            open_redis(
                settings.redis_url, settings.redis_cluster, pool_size=settings.redis_pool_size
            ),
            settings.operation_ttl_seconds,
            settings.stream_max_length,
            Keys(settings.key_prefix, Shards(settings.redis_shards)),
            settings.max_history,
        )
        feed_client = open_redis(settings.redis_url, settings.redis_cluster, socket_timeout=30)
        # The feed tails on a client of its own; its range reads (recovery after a reconnect)
        # share the store's bounded pool.
        self.feed = ChangeFeed(
            feed_client,
            self.store.keys,
            self.metrics,
            cluster=settings.redis_cluster,
            reads=self.store.redis,
        )
        self.pipeline = Pipeline(
            self.catalogue, self.store, self.metrics, settings.max_message_bytes
        )
        self.consumer = Consumer(
            settings.amqp_url,
            settings.queue,
            settings.dead_letter_queue,
            self.catalogue,
            self.pipeline,
            self.metrics,
            prefetch=settings.prefetch,
            batch_size=settings.batch_size,
            queue_arguments=settings.queue_arguments,
            max_attempts=settings.max_delivery_attempts,
        )
        self.verifier = TokenVerifier(
            settings.jwt_secret,
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.jwt_role_claim,
            ProviderKeys(settings.jwt_jwks_url, self.metrics) if settings.jwt_jwks_url else None,
        )
        self.waits = Waits(
            self.store,
            self.feed,
            self.metrics,
            per_user=settings.max_waits_per_user,
            reads=settings.wait_reads,
        )
        self.metrics.refreshers.append(self._count_pool)
        self.api = OperationsApi(
            self.store,
            self.feed,
            self.verifier,
            Readiness(
                {
                    "rabbitmq": self._broker_ready,
                    "redis": self._store_ready,
                    "redis-pool": self._pool_ready,
                    # False while a consumer's messages keep failing unexpectedly.
                    "consumer": self._consumer_ready,
                    "saga-consumer": self._saga_consumer_ready,
                }
            ),
            self.metrics,
            anonymous_reads=settings.anonymous_reads,
            endpoints=SERVED_ENDPOINTS,
            waits=self.waits,
        )
        self.hub = Hub(
            self.verifier,
            self.feed,
            self.metrics,
            allowed_origins=settings.allowed_origins,
            max_sockets_per_user=settings.max_sockets_per_user,
            recovery_max_entries=settings.recovery_max_entries,
        )
        self.sagas = (
            SagaRuntime(
                settings,
                self.catalogue,
                self.store.redis,
                self.metrics,
                os.environ if environ is None else environ,
                self.store,
            )
            if settings.sagas
            else None
        )
        self.sweeper = Sweeper(
            self.store.redis,
            self.store,
            self.sagas.store if self.sagas is not None else None,
            self.metrics,
            settings.sweep_seconds,
        )
        self.dead_letters = DeadLetterStore(
            self.store.redis,
            settings.key_prefix,
            settings.dead_letter_max_count,
            settings.dead_letter_max_age_seconds,
        )
        self.intake = (
            DeadLetterIntake(
                settings.amqp_url,
                settings.dead_letter_queues,
                self.dead_letters,
                self.metrics,
                settings.dead_letter_max_body_bytes,
                settings.queue_arguments,
                every=settings.sweep_seconds,
            )
            if settings.dead_letter_keep
            else None
        )
        self.redrive_publisher = RedrivePublisher(settings.amqp_url)
        self.workbench = Workbench(self.dead_letters, self.redrive_publisher, self.metrics)
        starter = SagaStarter(self._publisher)
        # With the sagas off there is no POST /orders, but GET /sagas still answers (an empty
        # list, to admins only), so the dashboard and ops tools need not tell the two apart.
        saga_routes = (
            [
                *OrdersApi(self.verifier, starter).routes,
                *SagasApi(
                    self.verifier,
                    self.sagas.store,
                    self.sagas.saga_types,
                    self.store,
                    self._coordinator,
                    self.metrics,
                ).routes,
                *SagaStartApi(
                    self.verifier, self.sagas.saga_types, starter, self.store, self.feed, self.waits
                ).routes,
            ]
            if self.sagas is not None
            else SagasApi(self.verifier, None, None, self.store).routes
        )
        self.http = Starlette(
            routes=[
                *saga_routes,
                *self.api.routes,
                *DeadLettersApi(self.verifier, self.dead_letters, self.workbench).routes,
                *browser_routes(),
            ],
            exception_handlers=EXCEPTION_HANDLERS,
            lifespan=self._lifespan,
            middleware=[
                *_cors_middleware(settings.allowed_origins),
                Middleware(TracingMiddleware, parent=settings.trace_http_parent),
            ],
        )
        # Counted by the 400 handler of operations.http.operations.
        self.http.state.metrics = self.metrics
        refusals = self.metrics.trace_context_refusals
        tracecontext.count_refusals(lambda source: refusals.inc(source=source))
        self.asgi = self.hub.asgi(self.http)
        self._connecting: asyncio.Task[None] | None = None
        self._layout_checked = False
        self._sagas_started = False
        self._stopping = asyncio.Event()
        self._layout_error: LayoutMismatch | None = None
        self.fatal: QueueMismatch | None = None
        self.on_fatal: Callable[[], None] = lambda: None

    def _coordinator(self) -> Coordinator | None:
        return self.sagas.coordinator if self.sagas is not None else None

    def _publisher(self) -> AmqpPublisher | None:
        return self.sagas.publisher if self.sagas is not None else None

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
        await self.feed.start()
        await self.hub.start()
        await self.sweeper.start()
        self._connecting = asyncio.create_task(self._connect_broker(), name="operations-connect")

    async def _connect_broker(self) -> None:
        """Checks the store's layout, then connects to RabbitMQ, retrying until both work. With
        the wrong shard count nothing is consumed, and /ready says so. A queue that exists with
        another type or other arguments stops the service (see ``on_fatal``): no retry helps."""
        backoff = Backoff(0.5, 10.0)
        while not self._stopping.is_set():
            try:
                if not self._layout_checked:
                    await self.store.claim_layout()
                    self._layout_checked = True
                if not self.consumer.ready:
                    await self.consumer.start()
                if self.sagas is not None and not self._sagas_started:
                    await self.sagas.start()
                    self._sagas_started = True
                # After the consumers: they declare the dead-letter queues' arguments first.
                if self.intake is not None:
                    await self.intake.start()
                return
            except LayoutMismatch as error:
                log.critical("not consuming: %s", error)
                self._layout_error = error
                return
            except QueueMismatch as error:
                log.critical("stopping: %s", error)
                self.fatal = error
                self.on_fatal()
                return
            except StoreUnavailable as error:
                log.warning("Redis not reachable yet (%s); retrying in %.1fs", error, backoff.delay)
            except (AMQPError, ConnectionError, OSError, TimeoutError) as error:
                log.warning(
                    "RabbitMQ not reachable yet (%s); retrying in %.1fs", error, backoff.delay
                )
            await backoff.wait(until=self._stopping)

    async def stop(self) -> None:
        """Stop in reverse data-flow order; no part may hold up the rest for long."""
        self._stopping.set()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self.intake is not None:
            await _bounded("dead-letter intake", self.intake.stop())
        await _bounded("redrive publisher", self.redrive_publisher.close())
        if self.sagas is not None:
            await _bounded("sagas", self.sagas.stop())
        await _bounded("consumer", self.consumer.stop())
        await _bounded("sweeper", self.sweeper.stop())
        await _bounded("hub", self.hub.stop())
        await _bounded("feed", self.feed.stop())
        await _bounded("feed connection", self.feed.redis.aclose())
        await _bounded("store connection", self.store.close())

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


async def _bounded(part: str, stopping: Coroutine[Any, Any, None], seconds: float = 5.0) -> None:
    try:
        await asyncio.wait_for(stopping, timeout=seconds)
    except TimeoutError:
        log.warning("stopping the %s took longer than %.0fs; going on without it", part, seconds)
    except Exception:
        log.exception("stopping the %s failed", part)


def _cors_middleware(origins: tuple[str, ...]) -> list[Middleware]:
    """Cross-origin reads only for the configured origins; none configured, same-origin only."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "If-None-Match", "Prefer"],
            expose_headers=["ETag", "Request-ID", "Resource-ID", "Location", "Preference-Applied"],
        )
    ]
