"""The hand-over from the dead-letter queues to Redis.

Each dead-letter queue is consumed with manual acks. A message is acknowledged only once Redis
holds it, so a crash at any point leaves it in the queue (then redelivered) or in Redis, never in
neither. A crash between the write and the ack redelivers a message that Redis already holds:
its id is the one the service stamped on the copy when it dead-lettered it
(``x-operations-dead-letter-id``), or, for a message the broker dead-lettered itself, a hash of
its content, so the redelivery is recognised and acknowledged without being kept twice.

While Redis is unreachable, the message waits, unacknowledged, and the write is retried with a
back-off. The age bound is applied on every keep and every ``every`` seconds besides, when the
dead letters kept are also counted for ``operations_dead_letters_waiting``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from operations.amqp.connections import Connections, Role
from operations.amqp.queues import CLASSIC, QueueArguments
from operations.amqp.topology import declare_dead_letter_queue
from operations.deadletters.letters import capture
from operations.deadletters.store import DeadLetterStore, Kept
from operations.errors import StoreUnavailable
from operations.metrics import Registry
from operations.periodic import Periodic

log = logging.getLogger("operations.deadletters.intake")
_PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "message_id",
    "timestamp",
    "type",
    "app_id",
    "reply_to",
    "priority",
)
_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class DeadLetterIntake:
    def __init__(
        self,
        amqp: str | Connections,
        queues: Sequence[str],
        store: DeadLetterStore,
        metrics: Registry,
        max_body_bytes: int,
        queue_arguments: QueueArguments = CLASSIC,
        every: float = 15.0,
        prefetch: int = 32,
    ) -> None:
        """``amqp``: the service's connections (this takes the ``dead-letters`` one), or a URL
        for a connection of its own."""
        self.connections = Connections(amqp) if isinstance(amqp, str) else amqp
        self._own_connections = isinstance(amqp, str)
        self.queues = list(queues)
        self.store = store
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.queue_arguments = queue_arguments
        self.prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._bounds = Periodic("dead-letter bounds", self._apply_bounds, every, log, metrics)

    @property
    def started(self) -> bool:
        return self._channel is not None

    async def start(self) -> None:
        if self._channel is not None:
            return
        connection = await self.connections.open(Role.DEAD_LETTERS)
        channel: AbstractChannel | None = None
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            for name in self.queues:
                queue = await declare_dead_letter_queue(channel, name, self.queue_arguments)
                await queue.consume(self._taker(name))
        except BaseException:
            await self._close(channel)
            raise
        self._channel = channel
        self._bounds.start()
        log.info("keeping the dead letters of %s in Redis", ", ".join(self.queues))

    async def stop(self) -> None:
        await self._bounds.stop()
        channel, self._channel = self._channel, None
        await self._close(channel)

    async def _close(self, channel: AbstractChannel | None) -> None:
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(aio_pika.exceptions.AMQPError, ConnectionError, OSError):
                await channel.close()
        if self._own_connections:
            await self.connections.close()

    def _taker(self, queue: str) -> Any:
        async def take(message: AbstractIncomingMessage) -> None:
            await self._take(queue, message)

        return take

    async def _take(self, queue: str, message: AbstractIncomingMessage) -> None:
        properties = {name: getattr(message, name, None) for name in _PROPERTIES}
        letter = capture(
            queue,
            message.headers,
            properties,
            message.body,
            self.max_body_bytes,
            dt.datetime.now(dt.UTC),
        )
        attempt = 0
        while True:
            try:
                kept = await self.store.keep(letter)
                break
            except StoreUnavailable as error:
                if attempt == 0:
                    log.error(
                        "Redis unreachable, holding dead letter %s: %s", letter.item.id, error
                    )
                await asyncio.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
                attempt += 1
        item = letter.item
        if kept.kept == "stored":
            self.metrics.dead_letters_kept.inc(queue=item.queue)
            log.info(
                "kept dead letter %s of %s (%r on %r): %s",
                item.id,
                item.queue,
                item.routing_key,
                item.exchange,
                item.reason,
                extra={"correlation_id": item.correlation_id},
            )
        elif kept.kept == "seen":
            log.info("dead letter %s was kept already; acknowledging it again", item.id)
        self._note_dropped(kept, item.id if kept.kept == "too-old" else None)
        with contextlib.suppress(aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):
            # On a closed channel the broker redelivers, and the id makes that harmless.
            await message.ack()

    async def _apply_bounds(self) -> None:
        self._note_dropped(await self.store.keep(None))
        self.metrics.dead_letters_waiting.set(await self.store.count())

    def _note_dropped(self, kept: Kept, too_old: str | None = None) -> None:
        aged = [*kept.dropped_for_age, *([too_old] if too_old else [])]
        if aged:
            self.metrics.dead_letters_dropped.inc(len(aged), bound="age")
            log.warning(
                "dropped %d dead letters older than %ds: %s",
                len(aged),
                self.store.max_age_seconds,
                ", ".join(aged),
            )
        if kept.dropped_for_count:
            self.metrics.dead_letters_dropped.inc(len(kept.dropped_for_count), bound="count")
            log.warning(
                "dropped the %d oldest dead letters to keep at most %d: %s",
                len(kept.dropped_for_count),
                self.store.max_count,
                ", ".join(kept.dropped_for_count),
            )
