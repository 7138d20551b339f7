"""The sagas inside the running service: their store, the publisher and outbox relay, the
coordinator, the deadline watcher, and the consumer of the messages their steps wait for."""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.catalogue import Catalogue
from operations.amqp.connections import Connections, Role
from operations.amqp.consumer import Consumer
from operations.amqp.publisher import AmqpPublisher
from operations.metrics import Registry
from operations.sagas.census import SagaCensus
from operations.sagas.coordinator import Coordinator
from operations.sagas.deadlines import DeadlineWatcher
from operations.sagas.intake import SagaIntake
from operations.sagas.outbox import OutboxRelay
from operations.sagas.overdue import OverdueWatch, Tell
from operations.sagas.registry import SagaTypes
from operations.sagas.store import RedisSagaStore
from operations.settings import Settings
from operations.store.redis_store import Store
from operations.store.shards import Shards


class SagaRuntime:
    def __init__(
        self,
        settings: Settings,
        catalogue: Catalogue,
        redis: aioredis.Redis,
        metrics: Registry,
        environ: Mapping[str, str],
        operations: Store,
        connections: Connections,
        tell: Tell | None = None,
    ) -> None:
        """Loads the saga types ``OPERATIONS_SAGA_TYPES`` names, each reading its own settings
        from ``environ``: a bad one raises ``SagaTypeError`` or ``SettingsError`` here. The
        sagas close their operations in ``operations``. They consume and publish on the
        ``sagas`` connection of ``connections``. ``tell`` tells the ops room of overdue sagas."""
        self.tell = tell
        self.settings = settings
        self.connections = connections
        self.metrics = metrics
        self.operations = operations
        self.store = RedisSagaStore(
            redis,
            settings.key_prefix,
            Shards(settings.redis_shards),
            tombstone_seconds=settings.saga_tombstone_seconds,
        )
        self.connection: AbstractRobustConnection | None = None
        self.publisher: AmqpPublisher | None = None
        self.saga_types = SagaTypes.load(
            settings.saga_types, catalogue, environ, dict(settings.saga_objectives)
        )
        self.coordinator: Coordinator | None = None
        self.watcher: DeadlineWatcher | None = None
        self.relay: OutboxRelay | None = None
        self.consumer: Consumer | None = None
        self.census: SagaCensus | None = None
        self.overdue: OverdueWatch | None = None

    def saga_names(self) -> list[str]:
        return self.saga_types.names

    @property
    def ready(self) -> bool:
        return self.consumer is not None and self.consumer.ready

    @property
    def consuming(self) -> bool:
        """False while the saga consumer's messages keep failing unexpectedly."""
        return self.consumer is None or not self.consumer.failing

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self.connection = await self.connections.open(Role.SAGAS)
        self.publisher = AmqpPublisher(self.connection)
        self.relay = OutboxRelay(
            self.store, self.publisher, self.metrics, operations=self.operations
        )
        self.coordinator = Coordinator(
            self.saga_types.in_order,
            self.store,
            self.relay,
            self.metrics,
            self.settings.saga_ttl_seconds,
            factory=self.saga_types.make,
            max_data_bytes=self.settings.saga_max_data_bytes,
            objectives=self.saga_types.objectives,
        )
        self.watcher = DeadlineWatcher(self.coordinator)
        queue = self.settings.saga_queue
        self.consumer = Consumer(
            self.connections,
            queue,
            f"{queue}.dead-letter",
            self.saga_types.bindings(),
            SagaIntake(
                self.coordinator,
                self.settings.saga_early_retries,
                self.settings.saga_retry_delay_ms / 1000,
                max_context_bytes=self.settings.max_message_bytes,
            ),
            self.metrics,
            prefetch=self.settings.prefetch,
            batch_size=self.settings.batch_size,
            retry_queue=f"{queue}.retry",
            name="operations-sagas",
            queue_arguments=self.settings.queue_arguments,
            max_attempts=self.settings.max_delivery_attempts,
            retry_delay_seconds=self.settings.saga_retry_delay_ms / 1000,
            role=Role.SAGAS,
        )
        self.census = SagaCensus(self.store, self.metrics)
        self.overdue = OverdueWatch(self.store, self.saga_types.objectives, self.metrics, self.tell)
        await self.consumer.start()
        await self.relay.start()
        await self.watcher.start()
        await self.census.start()
        await self.overdue.start()

    async def stop(self) -> None:
        for part in (self.overdue, self.census, self.watcher, self.relay, self.consumer):
            if part is not None:
                await part.stop()
        self.census = self.overdue = None
        self.watcher = self.relay = self.consumer = None
        if self.publisher is not None:
            await self.publisher.close()
        self.connection = self.publisher = None
