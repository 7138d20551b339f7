"""The service's AMQP connections: one per role, opened and closed one way.

A role is what a connection is for; every part with that role shares its connection, each on
channels of its own:

- ``tracking``: the tracking consumer (and the retry and dead-letter copies it publishes);
- ``sagas``: the saga consumer, the outbox relay and the HTTP starts of sagas (one publisher);
- ``dead-letters``: the dead-letter intake and the redrives.

Each connection is robust (aio-pika reconnects it and restores its channels), opened on first
use, and named ``operations <role>`` in its client properties, as ``rabbitmqctl list_connections
name client_properties`` and the management UI show it. :meth:`Connections.close` closes them all,
the last opened first.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import AMQPError

log = logging.getLogger("operations.amqp.connections")


class Role(StrEnum):
    TRACKING = "tracking"
    SAGAS = "sagas"
    DEAD_LETTERS = "dead-letters"


class Connections:
    def __init__(self, amqp_url: str, name: str = "operations") -> None:
        """``name``: the first word of the connections' names."""
        self.amqp_url = amqp_url
        self.name = name
        self._opened: dict[Role, AbstractRobustConnection] = {}
        self._lock = asyncio.Lock()

    def named(self, role: Role) -> str:
        """The name of the role's connection, as the broker shows it."""
        return f"{self.name} {role.value}"

    def __contains__(self, role: Role) -> bool:
        return role in self._opened

    async def open(self, role: Role) -> AbstractRobustConnection:
        """The role's connection, opened now if it is not yet; raises what connecting raises."""
        async with self._lock:
            connection = self._opened.get(role)
            if connection is None:
                connection = await aio_pika.connect_robust(
                    self.amqp_url, client_properties={"connection_name": self.named(role)}
                )
                self._opened[role] = connection
            return connection

    async def close(self) -> None:
        async with self._lock:
            while self._opened:
                role, connection = self._opened.popitem()
                try:
                    await connection.close()
                except (AMQPError, ConnectionError, OSError, RuntimeError) as error:
                    log.info("closing the %s connection failed: %s", self.named(role), error)
