"""What the simulated Pacco services' tests share: the ``connection`` and ``replies`` fixtures
(made available by ``pytest_plugins`` in conftest.py; replies is a queue bound to every reply
the services publish), running them in-process, and the ids the commands carry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from operations.pacco.demo import SERVICES, DemoServices, FailurePlan, failable
from tests.support import eventually, new_id


class Replies:
    """A temporary exclusive queue bound to every reply the simulated services publish."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue

    async def take(self, count: int, timeout: float = 10.0) -> list[AbstractIncomingMessage]:
        taken: list[AbstractIncomingMessage] = []

        async def enough() -> bool:
            while len(taken) < count:
                message = await self.queue.get(no_ack=True, fail=False)
                if message is None:
                    return False
                taken.append(message)
            return True

        await eventually(enough, f"{count} replies (got {len(taken)})", timeout=timeout)
        return taken

    async def one(self) -> AbstractIncomingMessage:
        return (await self.take(1))[0]


def body(message: AbstractIncomingMessage) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(message.body)
    return document


async def delete_demo_queues(connection: AbstractRobustConnection) -> None:
    async with connection.channel() as channel:
        for service in SERVICES:
            await channel.queue_delete(service.queue)


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    await delete_demo_queues(connection)
    yield connection
    await delete_demo_queues(connection)
    await connection.close()


@pytest.fixture
async def replies(connection: AbstractRobustConnection) -> AsyncIterator[Replies]:
    async with connection.channel() as channel:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for service in SERVICES:
            exchange = await channel.declare_exchange(
                service.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            for rule in service.replies:
                for reply in (rule.success, rule.rejected):
                    if reply is not None:
                        await queue.bind(exchange, routing_key=reply)
        yield Replies(queue)


def simulated(
    amqp_url: str, *fail: str, latency_ms: int = 0, seed: int | None = None
) -> DemoServices:
    return DemoServices(
        amqp_url,
        latency_ms=latency_ms,
        failures=FailurePlan.parse(fail, failable()),
        seed=seed,
    )


ORDER, CUSTOMER, PARCEL, VEHICLE = new_id(), new_id(), new_id(), new_id()
WHEN = "2030-05-01T00:00:00"
