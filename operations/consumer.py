"""The AMQP side: a robust connection, the declared topology, a micro-batching worker and the
explicit settlement of every delivery.

Deliveries are queued in arrival order by a synchronous callback; one worker takes whatever has
arrived (up to ``batch_size``), runs it through the :class:`Pipeline` in one Redis round trip, then
settles it: dead-letter copies are published with confirms, and the batch is acknowledged with one
multiple-ack per channel. Messages stay unacknowledged until their Redis write is done; while Redis
is unreachable the batch is retried with a back-off and nothing is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from .catalogue import Subscription
from .envelope import Delivered
from .errors import StoreUnavailable
from .metrics import Registry
from .outcomes import Ack, DeadLetter, Retry, Settlement
from .topology import declare_dead_letter_queue, declare_queue, declare_retry_queue

log = logging.getLogger("operations.consumer")

REASON_HEADER = "x-operations-reason"
DISPOSITION_HEADER = "x-operations-disposition"
EXCHANGE_HEADER = "x-operations-exchange"
ROUTING_KEY_HEADER = "x-operations-routing-key"
ATTEMPTS_HEADER = "x-operations-attempts"
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Processor(Protocol):
    """Turns a batch of deliveries into one settlement each, in order. Raises StoreUnavailable
    when it cannot work now: the batch is then retried, unacknowledged."""

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]: ...


class Consumer:
    def __init__(
        self,
        amqp_url: str,
        queue_name: str,
        dead_letter_queue: str,
        bindings: Iterable[Subscription],
        processor: Processor,
        metrics: Registry,
        prefetch: int = 512,
        batch_size: int = 256,
        retry_queue: str | None = None,
        name: str = "operations",
    ) -> None:
        self.amqp_url = amqp_url
        self.queue_name = queue_name
        self.dead_letter_queue = dead_letter_queue
        self.retry_queue = retry_queue
        self.bindings = list(bindings)
        self.processor = processor
        self.name = name
        self.metrics = metrics
        self.prefetch = prefetch
        self.batch_size = batch_size
        self._inbox: deque[AbstractIncomingMessage] = deque()
        self._arrived = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._worker: asyncio.Task[None] | None = None
        self._store_down = False

    @property
    def ready(self) -> bool:
        return (
            self._consumer_tag is not None
            and self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    @property
    def store_down(self) -> bool:
        return self._store_down

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.amqp_url, client_properties={"connection_name": self.name}
        )
        try:
            await self._subscribe(self._connection)
        except BaseException:
            await self._connection.close()
            self._connection = None
            raise

    async def _subscribe(self, connection: AbstractRobustConnection) -> None:
        connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await connection.channel(publisher_confirms=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch)
        await declare_dead_letter_queue(channel, self.dead_letter_queue)
        if self.retry_queue is not None:
            await declare_retry_queue(channel, self.retry_queue, self.queue_name)
        self._queue = await declare_queue(channel, self.bindings, self.queue_name)
        self._worker = asyncio.create_task(self._run(), name="operations-consumer")
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info(
            "consuming %s (%d bindings on %d exchanges), prefetch %d",
            self.queue_name,
            len(self.bindings),
            len({binding.exchange for binding in self.bindings}),
            self.prefetch,
        )

    async def stop(self) -> None:
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag, timeout=5)
            except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as error:
                log.info("cancelling the consumer failed: %s", error)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._connection is not None:
            await self._connection.close()

    def _on_reconnect(self, *_: Any) -> None:
        self.metrics.reconnects.inc(dependency="rabbitmq")
        log.warning("reconnected to RabbitMQ; unacknowledged deliveries will be redelivered")

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Deliveries' tasks start in delivery order, and this first step never awaits, so the
        # inbox keeps the broker's order.
        self._inbox.append(message)
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
                    # A defect, not bad input: keep consuming, and let the broker offer the batch
                    # again rather than leave it unacknowledged.
                    log.exception("unexpected failure on a batch of %d; requeueing it", len(batch))
                    await asyncio.sleep(1.0)
                    for message in batch:
                        await _quietly(message.nack(requeue=True))
                self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _handle(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        attempt = 0
        while True:
            try:
                settlements = await self.processor.process(batch)
                break
            except StoreUnavailable as error:
                self.metrics.store_retries.inc()
                delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                if not self._store_down:
                    log.error("Redis unreachable, holding %d deliveries: %s", len(batch), error)
                self._store_down = True
                attempt += 1
                await asyncio.sleep(delay)
        if self._store_down:
            self._store_down = False
            self.metrics.reconnects.inc(dependency="redis")
            log.warning("Redis reachable again")
        await self._settle(batch, settlements)

    async def _settle(
        self, batch: Sequence[AbstractIncomingMessage], settlements: Sequence[Settlement]
    ) -> None:
        copies = [
            (message, settlement)
            for message, settlement in zip(batch, settlements, strict=True)
            if not isinstance(settlement, Ack)
        ]
        failed: set[int] = set()
        if copies:
            results = await asyncio.gather(
                *(self._publish_copy(message, settlement) for message, settlement in copies),
                return_exceptions=True,
            )
            for (message, _), result in zip(copies, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("copy not confirmed by the broker, requeueing: %s", result)
                    failed.add(id(message))
        if not failed:
            last_per_channel: dict[int, AbstractIncomingMessage] = {}
            for message in batch:
                channel = _open_channel(message)
                if channel is not None:
                    last_per_channel[id(channel)] = message
            for message in last_per_channel.values():
                await _quietly(message.ack(multiple=True))
            return
        for message in batch:
            if id(message) in failed:
                await _quietly(message.nack(requeue=True))
            else:
                await _quietly(message.ack())

    async def _publish_copy(
        self, message: AbstractIncomingMessage, settlement: DeadLetter | Retry
    ) -> None:
        assert self._channel is not None
        headers = dict(message.headers or {})
        if message.exchange:  # not a message already back from the retry queue
            headers[EXCHANGE_HEADER] = message.exchange
            headers[ROUTING_KEY_HEADER] = message.routing_key or ""
        headers[REASON_HEADER] = settlement.reason
        expiration: float | None = None
        if isinstance(settlement, DeadLetter):
            target = self.dead_letter_queue
            headers[DISPOSITION_HEADER] = settlement.disposition.value
            headers["x-operations-dead-lettered-at"] = dt.datetime.now(dt.UTC).isoformat()
        else:
            assert self.retry_queue is not None, "Retry needs a consumer with a retry queue"
            target = self.retry_queue
            headers[ATTEMPTS_HEADER] = settlement.attempt
            expiration = settlement.delay_seconds
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


def _open_channel(message: AbstractIncomingMessage) -> object | None:
    """The channel a message came on, or None if that channel has closed since (the broker will
    redeliver the message)."""
    try:
        return message.channel
    except ChannelInvalidStateError:
        return None


async def _quietly(settling: Any) -> None:
    """Settling on a channel that died is harmless: the broker redelivers, and the store drops
    what it has already applied."""
    try:
        await settling
    except (AMQPError, ConnectionError, RuntimeError) as error:
        log.info("could not settle a delivery, it will be redelivered: %s", error)
