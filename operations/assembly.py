"""The service's parts built from its settings, one function each, for :class:`Service` to wire.

Each function builds one part the way the service runs it; none starts anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from operations.amqp.catalogue import Catalogue
from operations.amqp.connections import Connections
from operations.amqp.consumer import Consumer
from operations.amqp.publisher import AmqpPublisher
from operations.auth.jwks import ProviderKeys
from operations.auth.tokens import TokenVerifier
from operations.deadletters.http import DeadLettersApi
from operations.deadletters.intake import DeadLetterIntake
from operations.deadletters.redrive import Workbench
from operations.deadletters.store import DeadLetterStore
from operations.feed import ChangeFeed
from operations.http.operations import OperationsApi
from operations.http.responses import EXCEPTION_HANDLERS
from operations.metrics import Registry
from operations.pipeline import Pipeline
from operations.sagas.coordinator import Coordinator
from operations.sagas.http import SagasApi
from operations.sagas.http_bulk import BulkApi
from operations.sagas.http_start import SagaStartApi, SagaStarter
from operations.sagas.idempotency import Idempotency
from operations.sagas.overdue import Tell
from operations.sagas.runtime import SagaRuntime
from operations.settings import Settings
from operations.store.keys import IdempotencyKeys, Keys
from operations.store.redis_client import open_redis
from operations.store.redis_store import RedisStore
from operations.store.shards import Shards
from operations.tasks import BackgroundTasks
from operations.tracing.http import TracingMiddleware


def store(settings: Settings) -> RedisStore:
    """The store, on one bounded pool (on one server) shared by the sagas, the dead letters and
    the hub's recoveries."""
    return RedisStore(
        open_redis(settings.redis_url, settings.redis_cluster, pool_size=settings.redis_pool_size),
        settings.operation_ttl_seconds,
        settings.stream_max_length,
        Keys(settings.key_prefix, Shards(settings.redis_shards)),
        settings.max_history,
    )


def feed(settings: Settings, operations: RedisStore, metrics: Registry) -> ChangeFeed:
    """The change feed: it tails on a client of its own; its range reads (recovery after a
    reconnect) share the store's bounded pool."""
    return ChangeFeed(
        open_redis(settings.redis_url, settings.redis_cluster, socket_timeout=30),
        operations.keys,
        metrics,
        cluster=settings.redis_cluster,
        reads=operations.redis,
    )


def tracking_consumer(
    settings: Settings,
    connections: Connections,
    catalogue: Catalogue,
    operations: RedisStore,
    metrics: Registry,
) -> Consumer:
    return Consumer(
        connections,
        settings.queue,
        settings.dead_letter_queue,
        catalogue.bindings,
        Pipeline(catalogue, operations, metrics, settings.max_message_bytes),
        metrics,
        prefetch=settings.prefetch,
        batch_size=settings.batch_size,
        queue_arguments=settings.queue_arguments,
        max_attempts=settings.max_delivery_attempts,
    )


def verifier(settings: Settings, metrics: Registry) -> TokenVerifier:
    keys = ProviderKeys(settings.jwt_jwks_url, metrics) if settings.jwt_jwks_url else None
    return TokenVerifier(
        settings.jwt_secret,
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_role_claim,
        keys,
    )


def sagas(
    settings: Settings,
    catalogue: Catalogue,
    operations: RedisStore,
    metrics: Registry,
    environ: Mapping[str, str],
    connections: Connections,
    tell: Tell | None = None,
) -> SagaRuntime | None:
    """The sagas, if they are on; their types read their own settings from ``environ``;
    ``tell`` tells the ops room of overdue sagas."""
    if not settings.sagas:
        return None
    return SagaRuntime(
        settings, catalogue, operations.redis, metrics, environ, operations, connections, tell
    )


def dead_letters(settings: Settings, operations: RedisStore) -> DeadLetterStore:
    return DeadLetterStore(
        operations.redis,
        settings.key_prefix,
        settings.dead_letter_max_count,
        settings.dead_letter_max_age_seconds,
    )


def intake(
    settings: Settings, connections: Connections, letters: DeadLetterStore, metrics: Registry
) -> DeadLetterIntake | None:
    """The hand-over of dead letters to Redis, if they are kept."""
    if not settings.dead_letter_keep:
        return None
    return DeadLetterIntake(
        connections,
        settings.dead_letter_queues,
        letters,
        metrics,
        settings.dead_letter_max_body_bytes,
        settings.queue_arguments,
        every=settings.sweep_seconds,
    )


def saga_routes(
    verifier: TokenVerifier,
    sagas: SagaRuntime | None,
    api: OperationsApi,
    metrics: Registry,
    tasks: BackgroundTasks,
    order_routes: Callable[[SagaStarter], list[BaseRoute]],
    idempotency: Idempotency | None = None,
) -> list[BaseRoute]:
    """The saga routes, and those ``order_routes`` makes (Pacco's ``POST /orders``) with the
    same starter. With the sagas off there is no POST /orders, but GET /sagas still answers (an
    empty list, to admins only), so the dashboard and ops tools need not tell the two apart."""
    if sagas is None:
        none = BulkApi(verifier, None, None, lambda: None, lambda *_: None, metrics)
        return [*none.routes, *SagasApi(verifier, None, None, api.store).routes]

    def coordinator() -> Coordinator | None:
        return sagas.coordinator

    def publisher() -> AmqpPublisher | None:
        return sagas.publisher

    starter = SagaStarter(publisher, idempotency)
    sagas_api = SagasApi(
        verifier, sagas.store, sagas.saga_types, api.store, coordinator, metrics, tasks
    )
    bulk = BulkApi(
        verifier,
        sagas.store,
        sagas.saga_types,
        coordinator,
        sagas_api.compensate_all,
        metrics,
        sagas.settings.saga_retry_window_seconds,
    )
    return [
        *order_routes(starter),
        *bulk.routes,
        *sagas_api.routes,
        *SagaStartApi(verifier, sagas.saga_types, starter, api.store, api.feed, api.waits).routes,
    ]


def idempotency(settings: Settings, operations: RedisStore, metrics: Registry) -> Idempotency:
    """The ``Idempotency-Key`` reservations of saga starts, on the store's pool."""
    return Idempotency(
        operations.redis,
        IdempotencyKeys(settings.key_prefix),
        settings.idempotency_seconds,
        metrics,
    )


def http_app(
    settings: Settings,
    routes: list[BaseRoute],
    lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]],
    metrics: Registry,
) -> Starlette:
    app = Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        middleware=[
            *_cors_middleware(settings.allowed_origins),
            Middleware(TracingMiddleware, parent=settings.trace_http_parent),
        ],
    )
    # Counted by the 400 handler of operations.http.operations.
    app.state.metrics = metrics
    return app


def dead_letter_routes(
    verifier: TokenVerifier, letters: DeadLetterStore, workbench: Workbench
) -> list[BaseRoute]:
    return list(DeadLettersApi(verifier, letters, workbench).routes)


def _cors_middleware(origins: tuple[str, ...]) -> list[Middleware]:
    """Cross-origin reads only for the configured origins; none configured, same-origin only."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-None-Match",
                "Prefer",
                "Idempotency-Key",
            ],
            expose_headers=[
                "ETag",
                "Request-ID",
                "Resource-ID",
                "Location",
                "Preference-Applied",
                "Idempotent-Replayed",
            ],
        )
    ]
