"""How many messages wait in the queues a process consumes, and in their dead-letter queues, as
the broker counts them: a passive declare of each queue, on a pass every few seconds, copied into
the ``operations_queue_messages`` gauge. The broker counts the messages ready for delivery; those
already delivered to a consumer and not yet acknowledged (up to the prefetch) are not among them.

The pass works on a channel of its own on the tracking connection. A failure (the broker away, a
queue deleted) closes that channel, leaves the gauge as it was and is logged once, until a pass
counts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aio_pika.abc import AbstractChannel
from aiormq.exceptions import AMQPError

from operations.amqp.connections import Connections, Role
from operations.metrics import Registry
from operations.periodic import Periodic

log = logging.getLogger("operations.amqp.depths")

DEPTH_SECONDS = 5.0
"""How often each process counts the messages in its queues."""

_TIMEOUT_SECONDS = 5.0


class QueueDepths:
    def __init__(
        self,
        connections: Connections,
        queues: Sequence[str],
        metrics: Registry,
        every: float = DEPTH_SECONDS,
        role: Role = Role.TRACKING,
    ) -> None:
        self.connections = connections
        self.queues = tuple(queues)
        self.metrics = metrics
        self.role = role
        self._channel: AbstractChannel | None = None
        self._failing = False
        self.started = False
        self._passes = Periodic("queue-depths", self.refresh, every, log, metrics)

    async def start(self) -> None:
        self._passes.start()
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self._passes.stop()
        await self._close()

    async def refresh(self) -> None:
        """Counts each queue once; a failure is logged (once) and the next pass tries again."""
        try:
            counts = await asyncio.wait_for(self._count(), _TIMEOUT_SECONDS)
        except (AMQPError, ConnectionError, OSError, RuntimeError) as error:
            await self._close()
            if not self._failing:
                log.warning("cannot count the messages in %s: %r", ", ".join(self.queues), error)
            self._failing = True
            return
        for queue, count in counts.items():
            self.metrics.queue_messages.set(count, queue=queue)
        if self._failing:
            log.info("counting the messages in %s again", ", ".join(self.queues))
        self._failing = False

    async def _count(self) -> dict[str, int]:
        if self._channel is None or self._channel.is_closed:
            connection = await self.connections.open(self.role)
            self._channel = await connection.channel(publisher_confirms=False)
        underlay = await self._channel.get_underlay_channel()
        counts: dict[str, int] = {}
        for queue in self.queues:
            declared = await underlay.queue_declare(queue, passive=True)
            counts[queue] = (declared.message_count or 0) if declared is not None else 0
        return counts

    async def _close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(AMQPError, ConnectionError, OSError, RuntimeError):
                await channel.close()
