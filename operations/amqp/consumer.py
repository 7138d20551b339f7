"""The AMQP side: a robust connection, the declared topology, a micro-batching worker and the
explicit settlement of every delivery.

Deliveries are taken beneath aio-pika (see :mod:`operations.amqp.deliveries`) and queued in arrival
order without a task of their own; one worker takes whatever has arrived (up to ``batch_size``),
runs it through the :class:`Pipeline` in one Redis round trip, then settles it: dead-letter copies
are published with confirms, and the batch is acknowledged with one multiple-ack per channel, on
the channel each delivery came on. Messages stay unacknowledged until their Redis write is done;
while Redis is unreachable the batch is retried with a back-off and nothing is acknowledged.

Any other failure is the message's own: a batch whose processing raises is processed again one
delivery at a time, so the others are settled as usual, and each failing delivery is sent back
for a later attempt (through the retry queue, or to the back of the queue) with its count of
failures in a header, until ``max_attempts`` sends it to the dead-letter queue with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import AMQPError

from operations.amqp.attempts import Attempts, described
from operations.amqp.connections import Connections, Role
from operations.amqp.copies import copy_headers
from operations.amqp.deliveries import ChannelConsumer, Delivery
from operations.amqp.queues import CLASSIC, DEFAULT_MAX_ATTEMPTS, QueueArguments
from operations.amqp.settlements import Ack, DeadLetter, Failed, Retry, Settlement
from operations.amqp.topology import declare_dead_letter_queue, declare_queue, declare_retry_queue
from operations.backoff import Backoff
from operations.envelope import Delivered
from operations.errors import StoreUnavailable
from operations.logs import logged_id
from operations.metrics import Registry
from operations.tasks import BackgroundTasks
from operations.wire import Binding

log = logging.getLogger("operations.amqp.consumer")

# While Redis is unreachable, a batch is tried again after 0.05 s, 0.1 s, ... up to every 5 s.
_RETRY_FIRST_SECONDS = 0.05
_RETRY_CEILING_SECONDS = 5.0


class Processor(Protocol):
    """Turns a batch of deliveries into one settlement each, in order. Raises StoreUnavailable
    when it cannot work now: the batch is then retried, unacknowledged."""

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]: ...


class Consumer:
    def __init__(
        self,
        amqp: str | Connections,
        queue_name: str,
        dead_letter_queue: str,
        bindings: Iterable[Binding],
        processor: Processor,
        metrics: Registry,
        prefetch: int = 512,
        batch_size: int = 256,
        retry_queue: str | None = None,
        name: str = "operations",
        queue_arguments: QueueArguments = CLASSIC,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_delay_seconds: float = 1.0,
        role: Role = Role.TRACKING,
    ) -> None:
        """``amqp``: the service's connections (the role's one is shared), or a URL."""
        self.connections = Connections(amqp, name) if isinstance(amqp, str) else amqp
        self.amqp_url, self._own_connections = self.connections.amqp_url, isinstance(amqp, str)
        self.role = role
        self.queue_name = queue_name
        self.dead_letter_queue = dead_letter_queue
        self.retry_queue = retry_queue
        self.bindings = list(bindings)
        self.processor = processor
        self.name = name
        self.queue_arguments = queue_arguments
        self.metrics = metrics
        self.prefetch = prefetch
        self.batch_size = batch_size
        self.attempts = Attempts(
            name, metrics, max_attempts, retry_delay_seconds if retry_queue is not None else 0.0
        )
        self._inbox: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._deliveries: ChannelConsumer | None = None
        self._worker: asyncio.Task[None] | None = None
        self._tasks = BackgroundTasks(metrics, log)
        self._store_down = False

    @property
    def ready(self) -> bool:
        return (
            self._deliveries is not None
            and self._deliveries.consuming
            and self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    @property
    def deliveries(self) -> ChannelConsumer | None:
        """The low-level consumer, once started."""
        return self._deliveries

    @property
    def store_down(self) -> bool:
        return self._store_down

    @property
    def failing(self) -> bool:
        """Its messages keep failing unexpectedly (see :mod:`operations.amqp.attempts`)."""
        return self.attempts.failing

    async def start(self) -> None:
        """Connects and consumes; once started it recovers by itself, so again does nothing."""
        if self._connection is not None:
            return
        connection = await self.connections.open(self.role)
        try:
            await self._subscribe(connection)
        except BaseException:
            await self._release(connection)
            raise
        self._connection = connection

    async def _subscribe(self, connection: AbstractRobustConnection) -> None:
        connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await connection.channel(publisher_confirms=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch)
        arguments = self.queue_arguments
        await declare_dead_letter_queue(channel, self.dead_letter_queue, arguments)
        if self.retry_queue is not None:
            await declare_retry_queue(channel, self.retry_queue, self.queue_name, arguments)
        await declare_queue(
            channel, self.bindings, self.queue_name, arguments, self.dead_letter_queue
        )
        self._deliveries = ChannelConsumer(
            channel, self.queue_name, self._on_delivery, self.metrics
        )
        await self._deliveries.start()
        if self._worker is None:
            self._worker = self._tasks.start(f"{self.name}-consumer", self._run())
        log.info(
            "consuming %s, a %s queue (%d bindings on %d exchanges), prefetch %d",
            self.queue_name,
            arguments.type.value,
            len(self.bindings),
            len({binding.exchange for binding in self.bindings}),
            self.prefetch,
        )

    async def stop(self) -> None:
        connection, self._connection = self._connection, None
        await self._release(connection)

    async def _release(self, connection: AbstractRobustConnection | None) -> None:
        """Stops consuming, closes its channel (and its connection if its own)."""
        deliveries, self._deliveries, self._worker = self._deliveries, None, None
        if deliveries is not None:
            await deliveries.stop()
        await self._tasks.stop()  # the worker, before its channel goes
        channel, self._channel = self._channel, None
        if connection is not None:
            connection.reconnect_callbacks.discard(self._on_reconnect)
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(AMQPError, ConnectionError, OSError, RuntimeError):
                await channel.close()
        if self._own_connections:
            await self.connections.close()

    def _on_reconnect(self, *_: Any) -> None:
        self.metrics.reconnects.inc(dependency="rabbitmq")
        log.warning("reconnected to RabbitMQ; unacknowledged deliveries will be redelivered")

    def _on_delivery(self, delivery: Delivery) -> None:
        self._inbox.append(delivery)
        self._arrived.set()

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            batch = [self._inbox.popleft() for _ in range(min(self.batch_size, len(self._inbox)))]
            if not self._inbox:
                self._arrived.clear()
            if batch:
                started = time.perf_counter()
                try:
                    await self._handle(batch)
                except Exception:
                    # A defect in settling itself (processing failures are settled one by one):
                    # keep consuming, and let the broker offer the batch again rather than leave
                    # it unacknowledged.
                    log.exception(
                        "unexpected failure settling a batch of %d; requeueing it", len(batch)
                    )
                    await asyncio.sleep(1.0)
                    for delivery in batch:
                        if delivery.settleable:
                            self._note_delivery_limit(delivery)
                            await _quietly(delivery.nack(requeue=True), delivery)
                self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _note_delivery_limit(self, delivery: Delivery) -> None:
        """A quorum queue dead-letters a message returned to it once more than its delivery
        limit allows: the broker moves it, so the service says so here, on the last requeue."""
        arguments = self.queue_arguments
        count = (delivery.headers or {}).get("x-delivery-count")
        if not arguments.quorum or not isinstance(count, int) or count < arguments.delivery_limit:
            return
        self.metrics.dead_letters.inc(disposition="delivery-limit")
        log.error(
            "requeued after %d deliveries, past the delivery limit of %d: the broker moves it"
            " to %s",
            count + 1,
            arguments.delivery_limit,
            self.dead_letter_queue,
            extra={"correlation_id": logged_id(delivery)},
        )

    async def _handle(self, batch: Sequence[Delivery]) -> None:
        try:
            settlements = await self._processed(batch)
        except Exception as error:
            settlements = await self._isolated(batch, error)
        decided = [
            self.attempts.decided(delivery, settlement)
            for delivery, settlement in zip(batch, settlements, strict=True)
        ]
        await self._settle(batch, decided)

    async def _isolated(self, batch: Sequence[Delivery], error: Exception) -> list[Settlement]:
        """A batch whose processing raised, processed again one delivery at a time, so that only
        the deliveries that fail alone are failures."""
        if len(batch) == 1:
            log.error(
                "processing failed: %s",
                described(error),
                exc_info=error,
                extra={"correlation_id": logged_id(batch[0])},
            )
            return [Failed(described(error))]
        log.warning(
            "a batch of %d failed (%s); processing it one delivery at a time",
            len(batch),
            described(error),
        )
        settlements: list[Settlement] = []
        for delivery in batch:
            try:
                (settlement,) = await self._processed([delivery])
            except Exception as failure:
                log.error(
                    "processing failed: %s",
                    described(failure),
                    exc_info=failure,
                    extra={"correlation_id": logged_id(delivery)},
                )
                settlement = Failed(described(failure))
            settlements.append(settlement)
        return settlements

    async def _processed(self, batch: Sequence[Delivery]) -> list[Settlement]:
        """The processor's settlements; while Redis is unreachable, tried again with a back-off,
        holding every delivery unacknowledged."""
        backoff: Backoff | None = None
        while True:
            try:
                settlements = await self.processor.process(batch)
                break
            except StoreUnavailable as error:
                self.metrics.store_retries.inc()
                if not self._store_down:
                    log.error("Redis unreachable, holding %d deliveries: %s", len(batch), error)
                self._store_down = True
                backoff = backoff or Backoff(_RETRY_FIRST_SECONDS, _RETRY_CEILING_SECONDS)
                await backoff.wait()
        if self._store_down:
            self._store_down = False
            self.metrics.reconnects.inc(dependency="redis")
            log.warning("Redis reachable again")
        return settlements

    async def _settle(self, batch: Sequence[Delivery], settlements: Sequence[Settlement]) -> None:
        copies = [
            (delivery, settlement)
            for delivery, settlement in zip(batch, settlements, strict=True)
            if not isinstance(settlement, Ack)
        ]
        failed: set[int] = set()
        if copies:
            results = await asyncio.gather(
                *(self._publish_copy(delivery, settlement) for delivery, settlement in copies),
                return_exceptions=True,
            )
            for (delivery, _), result in zip(copies, results, strict=True):
                if isinstance(result, BaseException):
                    log.error(
                        "copy not confirmed by the broker, requeueing: %s",
                        result,
                        extra={"correlation_id": logged_id(delivery)},
                    )
                    failed.add(id(delivery))
        # A delivery whose channel has closed since is skipped: its tag means nothing on any other
        # channel, and the broker redelivers it.
        if not failed:
            last_per_channel: dict[int, Delivery] = {}
            for delivery in batch:
                if delivery.settleable:
                    last_per_channel[id(delivery.channel)] = delivery
            for delivery in last_per_channel.values():
                await _quietly(delivery.ack(multiple=True))
            return
        for delivery in batch:
            if not delivery.settleable:
                continue
            if id(delivery) in failed:
                await _quietly(delivery.nack(requeue=True), delivery)
            else:
                await _quietly(delivery.ack(), delivery)

    async def _publish_copy(
        self, message: Delivery, settlement: DeadLetter | Retry | Failed
    ) -> None:
        assert self._channel is not None
        assert not isinstance(settlement, Failed), "a failure is decided before it is settled"
        headers = copy_headers(message, settlement)
        expiration: float | None = None
        if isinstance(settlement, DeadLetter):
            target = self.dead_letter_queue
        elif self.retry_queue is not None:
            target = self.retry_queue
            expiration = settlement.delay_seconds
        else:  # no retry queue: to the back of its own queue, at once
            target = self.queue_name
        copy = aio_pika.Message(
            body=message.body,
            headers=headers,
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            expiration=expiration,
        )
        await self._channel.default_exchange.publish(copy, routing_key=target)


async def _quietly(settling: Any, delivery: Delivery | None = None) -> None:
    """Settling on a channel that died is harmless: the broker redelivers, and the store drops
    what it has already applied. ``delivery`` names the one message settled, if only one is."""
    try:
        await settling
    except (AMQPError, ConnectionError, RuntimeError) as error:
        correlation_id = logged_id(delivery) if delivery is not None else None
        log.info(
            "could not settle a delivery, it will be redelivered: %s",
            error,
            extra={"correlation_id": correlation_id},
        )
