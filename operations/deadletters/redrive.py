"""Redriving and discarding kept dead letters, for the HTTP API and the command line.

A redrive republishes the message to its original exchange and routing key, with its original
properties and headers plus ``x-redriven`` (the redrives so far), as a mandatory message on a
channel with publisher confirms; only once the broker has confirmed it is the letter removed. A
crash in between leaves the letter kept and the message published: redriving it again sends it
twice, which the tracking store (by message id) and the sagas (by the message ids they have
seen) drop. Every redrive and discard is logged with who did it, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import AMQPError, PublishError

from operations import tracing
from operations.amqp.connections import Connections, Role
from operations.deadletters.letters import REDRIVEN_HEADER, StoredLetter, untagged
from operations.deadletters.store import DeadLetterStore
from operations.envelope import header_text
from operations.errors import BrokerUnavailable, DeadLetterNotFound, DeadLetterNotRedrivable
from operations.metrics import Registry

log = logging.getLogger("operations.deadletters")
CONFIRM_WITHIN = 10.0


class RedrivePublisher:
    """A channel with publisher confirms, opened on first use, on the ``dead-letters``
    connection of ``amqp`` (the service's connections), or of its own given a URL."""

    def __init__(self, amqp: str | Connections) -> None:
        self.connections = Connections(amqp) if isinstance(amqp, str) else amqp
        self._own_connections = isinstance(amqp, str)
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def channel(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                connection = await self.connections.open(Role.DEAD_LETTERS)
                self._channel = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            return self._channel

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(AMQPError, ConnectionError, OSError, RuntimeError):
                await channel.close()
        if self._own_connections:
            await self.connections.close()


async def publish_redrive(channel: AbstractChannel, letter: StoredLetter) -> None:
    """Republishes ``letter`` to its original exchange and routing key; returns once the broker
    has confirmed it. Raises DeadLetterNotRedrivable when the broker routes it to no queue, and
    BrokerUnavailable when it cannot be handed over."""
    item = letter.item
    headers: dict[str, Any] = {key: untagged(value) for key, value in letter.wire.items()}
    headers[REDRIVEN_HEADER] = item.attempts
    # The redrive continues the message's own trace when it came with one (the business
    # transaction it belongs to), and the redriving request's trace otherwise.
    original = {
        key: text
        for key in ("traceparent", "tracestate")
        if (text := header_text(headers.get(key))) is not None
    }
    properties = item.properties
    timestamp = properties.get("timestamp")
    priority = properties.get("priority")
    message = aio_pika.Message(
        letter.body_bytes,
        headers=headers,
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        correlation_id=item.correlation_id,
        message_id=item.message_id,
        timestamp=dt.datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else None,
        type=properties.get("type"),
        app_id=properties.get("app_id"),
        reply_to=properties.get("reply_to"),
        priority=priority if isinstance(priority, int) else None,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    try:
        exchange = (
            channel.default_exchange
            if not item.exchange
            else await channel.get_exchange(item.exchange, ensure=False)
        )
        with tracing.publishing(
            item.exchange,
            item.routing_key,
            headers,
            item.message_id,
            item.correlation_id,
            stored=original or None,
        ):
            await exchange.publish(
                message, routing_key=item.routing_key, mandatory=True, timeout=CONFIRM_WITHIN
            )
    except PublishError as error:
        raise DeadLetterNotRedrivable(
            f"the broker routes {item.routing_key!r} on exchange {item.exchange!r} to no queue"
        ) from error
    except (AMQPError, ConnectionError, OSError, TimeoutError, RuntimeError) as error:
        raise BrokerUnavailable(f"the broker did not confirm the redrive: {error}") from error


class Workbench:
    """Redrive and discard, one letter or one group, on behalf of ``who``."""

    def __init__(
        self, store: DeadLetterStore, publisher: RedrivePublisher, metrics: Registry
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.metrics = metrics

    async def redrive(self, letter_id: str, who: str) -> StoredLetter:
        letter = await self.store.get(letter_id)
        if letter is None:
            raise DeadLetterNotFound(letter_id)
        if letter.item.body_truncated:
            raise DeadLetterNotRedrivable(
                f"dead letter {letter_id!r} was kept with its body cut to"
                f" {len(letter.body_bytes)} of {letter.item.body_bytes} bytes; it can only be"
                " discarded"
            )
        if not await self.store.hold(letter_id):
            raise DeadLetterNotRedrivable(f"dead letter {letter_id!r} is being redriven already")
        try:
            if await self.store.get(letter_id) is None:  # removed while we looked
                raise DeadLetterNotFound(letter_id)
            try:
                channel = await self.publisher.channel()
            except (AMQPError, ConnectionError, OSError, TimeoutError) as error:
                raise BrokerUnavailable(f"the broker cannot be reached: {error}") from error
            await publish_redrive(channel, letter)
            await self.store.remove(letter_id)
        finally:
            await self.store.release(letter_id)
        item = letter.item
        self.metrics.dead_letters_redriven.inc(queue=item.queue)
        log.warning(
            "dead letter %s redriven by %s to %r on %r (redrive %d): %s",
            letter_id,
            who,
            item.routing_key,
            item.exchange,
            item.attempts,
            item.reason,
            extra={"correlation_id": item.correlation_id},
        )
        return letter

    async def redrive_group(self, queue: str, reason: str, who: str) -> tuple[int, int]:
        """Redrives the group oldest first: (redriven, skipped). A letter that cannot be
        redriven is skipped; a broker that fails stops the group there (BrokerUnavailable)."""
        redriven = skipped = 0
        for letter_id in await self.store.group_ids(queue, reason):
            try:
                await self.redrive(letter_id, who)
            except DeadLetterNotFound:
                continue
            except DeadLetterNotRedrivable as error:
                log.warning("group redrive by %s skipped %s: %s", who, letter_id, error.reason)
                skipped += 1
                continue
            except BrokerUnavailable as error:
                raise BrokerUnavailable(
                    f"{error.reason}; {redriven} of the group were redriven before"
                ) from error
            redriven += 1
        return redriven, skipped

    async def discard(self, letter_id: str, who: str) -> StoredLetter:
        letter = await self.store.get(letter_id)
        if letter is None or not await self.store.remove(letter_id):
            raise DeadLetterNotFound(letter_id)
        item = letter.item
        self.metrics.dead_letters_discarded.inc(queue=item.queue)
        log.warning(
            "dead letter %s discarded by %s (%r on %r): %s",
            letter_id,
            who,
            item.routing_key,
            item.exchange,
            item.reason,
            extra={"correlation_id": item.correlation_id},
        )
        return letter

    async def discard_group(self, queue: str, reason: str, who: str) -> int:
        discarded = 0
        for letter_id in await self.store.group_ids(queue, reason):
            try:
                await self.discard(letter_id, who)
            except DeadLetterNotFound:
                continue
            discarded += 1
        return discarded
