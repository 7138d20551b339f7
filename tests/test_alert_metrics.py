"""The gauges the shipped alerts (deploy/prometheus/alerts.yml) read that no other test covers,
scraped from ``GET /metrics`` of a running service: readiness, the messages waiting in its
queues, and the dead letters waiting in the workbench."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis

from operations.amqp.connections import Connections
from operations.amqp.depths import QueueDepths
from operations.metrics import Registry
from operations.settings import Settings
from tests.dead_letter_support import copy_headers, put_copies
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, eventually, start_service


async def scraped(http: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return Scrape(response.text).value(name, **labels)


@pytest.mark.slow  # waits for the next pass, up to 5 s
async def test_operations_ready_follows_the_readiness_checks_without_a_call_to_ready(
    service: RunningService, http: httpx.AsyncClient
) -> None:
    assert await scraped(http, "operations_ready") == 1
    await service.service.consumer.stop()  # the rabbitmq check fails from now on

    async def unready() -> bool:
        return await scraped(http, "operations_ready") == 0

    await eventually(unready, "operations_ready 0 once the consumer stopped")
    assert (await http.get("/ready")).status_code == 503
    assert await scraped(http, "operations_ready") == 0


@pytest.mark.slow  # waits for the next pass, up to 5 s
async def test_the_messages_waiting_in_each_queue_and_its_dead_letter_queue(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    publisher: Publisher,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    queue, dead_letter_queue = settings.queue, settings.dead_letter_queue

    async def counted() -> bool:
        return await scraped(http, "operations_queue_messages", queue=queue) == 0

    await eventually(counted, "the tracking queue counted empty")
    assert await scraped(http, "operations_queue_messages", queue=settings.saga_queue) == 0
    assert await scraped(http, "operations_queue_messages", queue=dead_letter_queue) == 0

    await service.service.consumer.stop()  # what is published now waits in the queue
    for _ in range(3):
        await publisher.publish("create_order", str(uuid.uuid4()), user="u")
    await put_copies(amqp, dead_letter_queue, [copy_headers(), copy_headers()])

    async def waiting() -> tuple[float | None, float | None] | None:
        tracking = await scraped(http, "operations_queue_messages", queue=queue)
        dead = await scraped(http, "operations_queue_messages", queue=dead_letter_queue)
        return (tracking, dead) if (tracking, dead) == (3, 2) else None

    assert await eventually(waiting, "3 messages in the queue and 2 dead letters") == (3, 2)


async def test_the_dead_letters_waiting_in_the_workbench(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    kept = replace(settings, dead_letter_keep=True, sweep_seconds=1, sagas=False)
    async with (
        start_service(kept) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        assert await scraped(http, "operations_dead_letters_waiting") == 0
        await put_copies(amqp, kept.dead_letter_queue, [copy_headers() for _ in range(3)])

        async def three() -> bool:
            return await scraped(http, "operations_dead_letters_waiting") == 3

        await eventually(three, "3 dead letters waiting in the workbench")
        # Taken off the queue: the queue's own count goes back to none.
        queue = kept.dead_letter_queue
        assert await scraped(http, "operations_queue_messages", queue=queue) == 0


async def test_a_queue_that_cannot_be_counted_is_logged_once_and_counted_once_it_is_back(
    settings: Settings,
    amqp: aio_pika.abc.AbstractRobustConnection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections = Connections(settings.amqp_url)
    metrics = Registry()
    depths = QueueDepths(connections, [settings.queue], metrics)
    try:
        with caplog.at_level(logging.INFO, logger="operations.amqp.depths"):
            await depths.refresh()  # the queue does not exist yet: the broker says 404
            await depths.refresh()
            async with amqp.channel() as channel:
                await channel.declare_queue(settings.queue, durable=True)
                for _ in range(2):
                    message = aio_pika.Message(b"{}")
                    await channel.default_exchange.publish(message, routing_key=settings.queue)
            await depths.refresh()
    finally:
        await depths.stop()
        await connections.close()
    said = [record.getMessage() for record in caplog.records]
    assert sum(line.startswith("cannot count the messages") for line in said) == 1, said
    assert f"counting the messages in {settings.queue} again" in said
    assert metrics.queue_messages.value(queue=settings.queue) == 2
