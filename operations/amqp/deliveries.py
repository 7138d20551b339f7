"""Deliveries taken from aiormq directly, beneath aio-pika: a light :class:`Delivery` per message,
and a :class:`ChannelConsumer` that keeps one low-level consumer registered on a robust channel.

aio-pika builds an ``IncomingMessage`` for every delivery and runs the consumer callback in a
task of its own, on top of the task aiormq already starts per delivery. Consuming at the aiormq
level skips both, while aio-pika's robust connection and channel still carry the topology,
reconnects and publishing.

The robust channel restores its qos, exchanges, queues and bindings when it reopens (after the
broker closed the channel, or after a reconnect), but it only restores consumers registered
through aio-pika queues. :class:`ChannelConsumer` therefore registers itself again from the
channel's ``reopen_callbacks``, which run after that restore, exactly once per underlying channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiormq.abc
from aio_pika.abc import AbstractRobustChannel
from aiormq import spec
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from operations.backoff import Backoff
from operations.metrics import Registry
from operations.tasks import BackgroundTasks

log = logging.getLogger("operations.amqp.deliveries")


class Delivery:
    """One delivered message: the fields the envelope reads (see :class:`envelope.Delivered`),
    the ones a dead-letter copy carries over, and the channel and delivery tag to settle it on.

    Values are aiormq's as they are, as aio-pika's ``IncomingMessage`` keeps them: headers are
    pamqp's decoded field table (long strings as bytes, byte arrays as bytearray, nested tables
    as dicts), and the timestamp is an aware UTC datetime."""

    __slots__ = (
        "body",
        "channel",
        "content_type",
        "correlation_id",
        "delivery_tag",
        "exchange",
        "headers",
        "message_id",
        "redelivered",
        "routing_key",
        "timestamp",
        "type",
    )

    def __init__(self, message: aiormq.abc.DeliveredMessage) -> None:
        delivery = message.delivery
        if not isinstance(delivery, spec.Basic.Deliver | spec.Basic.GetOk):
            raise TypeError(f"not a delivery: {type(delivery).__name__}")
        properties = message.header.properties
        self.channel: aiormq.abc.AbstractChannel = message.channel
        self.delivery_tag: int = delivery.delivery_tag or 0
        self.redelivered: bool = bool(delivery.redelivered)
        self.exchange: str | None = delivery.exchange
        self.routing_key: str | None = delivery.routing_key
        self.body: bytes = message.body
        self.headers: Mapping[str, Any] = properties.headers or {}
        self.correlation_id: str | None = properties.correlation_id
        self.message_id: str | None = properties.message_id
        self.timestamp: dt.datetime | None = properties.timestamp
        self.content_type: str | None = properties.content_type
        self.type: str | None = properties.message_type

    @property
    def settleable(self) -> bool:
        """False once the channel it came on has closed: its delivery tag means nothing on any
        other channel, and the broker redelivers the message."""
        return not self.channel.is_closed

    async def ack(self, multiple: bool = False) -> None:
        await self.channel.basic_ack(self.delivery_tag, multiple=multiple)

    async def nack(self, requeue: bool = True) -> None:
        await self.channel.basic_nack(self.delivery_tag, requeue=requeue)


class ChannelConsumer:
    """Consumes ``queue_name`` on the aiormq channel under ``channel``, handing each delivery to
    ``on_delivery`` synchronously, in delivery order, and consumes again whenever the robust
    channel reopens. Set the channel's qos before :meth:`start`: the robust channel applies it
    again on every reopen, before this consumer registers."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue_name: str,
        on_delivery: Callable[[Delivery], None],
        metrics: Registry,
        timeout: float = 10.0,
    ) -> None:
        self.channel = channel
        self.queue_name = queue_name
        self.on_delivery = on_delivery
        self.timeout = timeout
        self.registrations = 0
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._tag: str | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        self._tasks = BackgroundTasks(metrics, log)
        self._retrying: asyncio.Task[None] | None = None

    @property
    def consuming(self) -> bool:
        underlay = self._underlay
        return (
            not self._stopped
            and underlay is not None
            and not underlay.is_closed
            and self._tag is not None
        )

    @property
    def underlay(self) -> aiormq.abc.AbstractChannel | None:
        """The aiormq channel consumed on now, if any."""
        return self._underlay if self.consuming else None

    async def start(self) -> None:
        self._stopped = False
        self.channel.reopen_callbacks.add(self._on_reopen)
        await self._consume()

    async def stop(self) -> None:
        self._stopped = True
        self.channel.reopen_callbacks.discard(self._on_reopen)
        await self._tasks.stop()
        underlay, tag = self._underlay, self._tag
        self._underlay = self._tag = None
        if underlay is not None and tag is not None and not underlay.is_closed:
            try:
                await underlay.basic_cancel(tag, timeout=self.timeout)
            except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as error:
                log.info("cancelling the consumer on %s failed: %s", self.queue_name, error)

    async def _consume(self) -> None:
        """Registers the consumer on the current underlying channel, unless it already is."""
        async with self._lock:
            if self._stopped:
                return
            # Not before the robust channel has restored its qos, queues and bindings: a consumer
            # registered earlier would have no prefetch limit.
            await asyncio.wait_for(self.channel.ready(), timeout=self.timeout)
            underlay = await self.channel.get_underlay_channel()
            if underlay is self._underlay and self._tag is not None:
                return
            underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
            consumed = await underlay.basic_consume(
                self.queue_name, self._on_delivered, timeout=self.timeout
            )
            self._underlay, self._tag = underlay, consumed.consumer_tag
            self.registrations += 1

    async def _on_delivered(self, message: aiormq.abc.DeliveredMessage) -> None:
        # aiormq starts one task per delivery, in delivery order; this never awaits, so the
        # deliveries reach on_delivery in the broker's order.
        self.on_delivery(Delivery(message))

    async def _on_reopen(self, *_: Any) -> None:
        """The robust channel has reopened and restored its qos, queues and bindings."""
        try:
            await self._consume()
        except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as error:
            log.warning("consuming %s again failed (%s); retrying", self.queue_name, error)
            self._retry()
        else:
            log.info("consuming %s again on the reopened channel", self.queue_name)

    def _retry(self) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = self._tasks.start("consume-again", self._keep_trying())

    async def _keep_trying(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while not self._stopped and not self.consuming:
            await backoff.wait()
            try:
                await self._consume()
            except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as error:
                log.warning("consuming %s again failed (%s); retrying", self.queue_name, error)

    def _on_cancel(self, frame: spec.Basic.Cancel) -> None:
        """The broker cancelled the consumer (its queue was deleted, for one). Reopen the channel:
        the robust channel declares the queue and its bindings again, then the reopen hook
        consumes again; whatever was in flight on the channel is redelivered."""
        underlay = self._underlay
        if self._stopped or frame.consumer_tag != self._tag or underlay is None:
            return
        log.warning(
            "the broker cancelled the consumer on %s; reopening the channel", self.queue_name
        )
        self._tag = None
        self._tasks.start("consumer-reset", self._reset(underlay))

    async def _reset(self, underlay: aiormq.abc.AbstractChannel) -> None:
        with contextlib.suppress(AMQPError, ConnectionError, RuntimeError, TimeoutError):
            await asyncio.wait_for(
                underlay.close(ChannelInvalidStateError("consumer cancelled by the broker")),
                timeout=self.timeout,
            )
        self._retry()  # in case the channel did not close: consume on it again
