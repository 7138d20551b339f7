"""The consumer takes deliveries beneath aio-pika: what a Delivery reads matches aio-pika's
IncomingMessage for the same published message, and the low-level consumer keeps consuming, once
per channel and within its prefetch, after the broker closes its channel, after its connection is
closed, after its queue is deleted and after a RabbitMQ restart, with no message lost, none applied
twice, and no acknowledgement sent on a channel its delivery did not come on."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import os
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import aiormq.abc
import orjson
import pytest
import redis.asyncio as aioredis

from operations.amqp.catalogue import Catalogue
from operations.amqp.consumer import Consumer
from operations.amqp.deliveries import ChannelConsumer, Delivery
from operations.amqp.settlements import Ack, Settlement
from operations.amqp.topology import declare_queue
from operations.envelope import Delivered
from operations.metrics import Registry
from operations.pipeline import Pipeline
from operations.settings import DEFAULT_MESSAGES_FILE, Settings
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from tests.support import Publisher, SteadyPublisher, eventually, new_id

ROOT = Path(__file__).resolve().parent.parent
PACCO = Catalogue.load(DEFAULT_MESSAGES_FILE)
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
FIELDS = (
    "exchange",
    "routing_key",
    "body",
    "headers",
    "correlation_id",
    "message_id",
    "timestamp",
    "content_type",
    "type",
    "redelivered",
)


# -- the adapter against aio-pika's IncomingMessage --------------------------------------------


async def test_a_delivery_reads_like_aio_pikas_incoming_message(
    settings: Settings, amqp: Any
) -> None:
    """The same published messages, read once through aio-pika and once through Delivery: every
    field, and the envelope parsed from each, are equal."""
    context = {"User": {"Id": "u-1"}, "Name": "create_order"}
    headers_cases: list[dict[str, Any]] = [
        {"message_context": bytearray(orjson.dumps(context)), "Saga": bytearray(b"Completed")},
        {"message_context": orjson.dumps(context).decode(), "saga": "Rejected"},
        {"message_context": bytearray(b"\xff{not utf-8"), "Saga": bytearray(b"\xfe")},
        {
            "message_context": {"user": {"id": "u-2"}, "name": "nested"},
            "list": [1, "two", bytearray(b"three"), {"four": 4}],
            "flag": True,
            "int": 2**40,
            "float": 1.5,
            "decimal": decimal.Decimal("1.25"),
            "when": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
            "none": None,
            "unicode": "ünïcødé",
        },
        {},
    ]
    queues = [f"{settings.queue}.incoming", f"{settings.queue}.delivery"]
    async with amqp.channel() as channel:
        exchange = await channel.declare_exchange(
            "orders", aio_pika.ExchangeType.TOPIC, durable=True
        )
        bound = []
        for name in queues:
            queue = await channel.declare_queue(name, auto_delete=True)
            await queue.bind(exchange, routing_key="create_order")
            bound.append(queue)
        sent_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        for number, headers in enumerate(headers_cases):
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps({"n": number}),
                    headers=headers,
                    correlation_id=None if number == 4 else new_id(),
                    message_id=None if number == 4 else new_id(),
                    content_type="application/json" if number else None,
                    type="create_order" if number else None,
                    timestamp=None if number == 4 else sent_at,
                ),
                routing_key="create_order",
            )
        underlay = await channel.get_underlay_channel()
        for _ in headers_cases:
            incoming = await bound[0].get(no_ack=True, timeout=5)
            got = await underlay.basic_get(queues[1], no_ack=True, timeout=5)
            delivery = Delivery(got)
            for field in FIELDS:
                assert getattr(delivery, field) == getattr(incoming, field), field
                assert type(getattr(delivery, field)) is type(getattr(incoming, field)), field
            assert delivery.headers == incoming.headers
            for key, value in (incoming.headers or {}).items():
                assert type(delivery.headers[key]) is type(value), key
            assert _envelope(delivery) == _envelope(incoming)
            assert delivery.channel is underlay
        for queue in bound:
            await queue.delete(if_unused=False, if_empty=False)


def _envelope(delivered: Delivered) -> Any:
    try:
        return PACCO.read(delivered, 64 * 1024)
    except Exception as error:  # the same error either way
        return repr(error)


# -- the low-level consumer across channel and connection losses --------------------------------


class Holding:
    """A processor that acknowledges everything, holding the first batch until released, and
    records every message it is given."""

    def __init__(self, hold: bool = True) -> None:
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.seen: list[Delivery] = []

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]:
        first = not self.seen
        self.seen.extend(delivery for delivery in batch if isinstance(delivery, Delivery))
        if first:
            await self.release.wait()
        return [Ack() for _ in batch]


def recording(deliveries: ChannelConsumer) -> list[Delivery]:
    """Every delivery the consumer hands on, in order."""
    received: list[Delivery] = []
    handed_on = deliveries.on_delivery

    def record(delivery: Delivery) -> None:
        received.append(delivery)
        handed_on(delivery)

    deliveries.on_delivery = record
    return received


def on(channel: aiormq.abc.AbstractChannel | None, received: list[Delivery]) -> list[Delivery]:
    return [delivery for delivery in received if delivery.channel is channel]


async def close_channel_from_the_broker(deliveries: ChannelConsumer) -> aiormq.abc.AbstractChannel:
    """Acknowledging a tag the broker never sent is a channel error: the broker closes it."""
    channel = deliveries.underlay
    assert channel is not None
    await channel.basic_ack(2**40)
    await eventually(lambda: _closed(channel), "the broker to close the channel")
    return channel


async def _closed(channel: aiormq.abc.AbstractChannel) -> bool:
    return channel.is_closed


async def consuming_again(
    deliveries: ChannelConsumer, old: aiormq.abc.AbstractChannel, registrations: int
) -> aiormq.abc.AbstractChannel:
    async def again() -> aiormq.abc.AbstractChannel | None:
        underlay = deliveries.underlay
        if underlay is None or underlay is old or deliveries.registrations < registrations:
            return None
        return underlay

    return await eventually(again, "the consumer to consume again", timeout=60)


def consumers_on(channel: aiormq.abc.AbstractChannel | None) -> int:
    """How many consumers the channel has: one per basic.consume still in effect."""
    assert isinstance(channel, aiormq.Channel)
    return len(channel.consumers)


async def queue_length(amqp: aio_pika.abc.AbstractRobustConnection, name: str) -> int:
    # After a broker restart the test's own connection may still be reconnecting.
    await asyncio.wait_for(amqp.ready(), timeout=60)
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(name, durable=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count


def consumer(
    settings: Settings, processor: Any, metrics: Registry, prefetch: int, name: str
) -> Consumer:
    return Consumer(
        settings.amqp_url,
        settings.queue,
        settings.dead_letter_queue,
        PACCO.bindings,
        processor,
        metrics,
        prefetch=prefetch,
        batch_size=100,
        name=name,
    )


def consuming_on(running: Consumer) -> tuple[ChannelConsumer, aiormq.abc.AbstractChannel]:
    """The started consumer's low-level consumer and the channel it consumes on now."""
    deliveries = running.deliveries
    assert deliveries is not None
    channel = deliveries.underlay
    assert channel is not None
    return deliveries, channel


async def declared(amqp: Any, settings: Settings) -> None:
    async with amqp.channel() as channel:
        await declare_queue(channel, PACCO.bindings, settings.queue)


async def test_prefetch_and_one_registration_hold_on_a_reopened_channel_and_acks_stay_on_theirs(
    settings: Settings, amqp: Any, publisher: Publisher
) -> None:
    await declared(amqp, settings)
    holding = Holding()
    running = consumer(settings, holding, Registry(), prefetch=10, name=f"t-{uuid.uuid4().hex}")
    await running.start()
    try:
        deliveries = running.deliveries
        assert deliveries is not None and deliveries.registrations == 1
        await running.start()  # started already: nothing more is opened or registered
        assert running.deliveries is deliveries and deliveries.registrations == 1
        received = recording(deliveries)
        for _ in range(30):
            await publisher.publish("create_order", new_id(), user="u")
        first = deliveries.underlay
        assert first is not None
        await eventually(lambda: _count(on(first, received), 10), "the first 10 deliveries")
        await asyncio.sleep(0.3)
        assert len(received) == 10, "more deliveries than the prefetch allows"

        await close_channel_from_the_broker(deliveries)
        second = await consuming_again(deliveries, first, 2)
        acked: list[tuple[int, bool]] = []
        basic_ack = second.basic_ack

        async def record_ack(delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
            acked.append((delivery_tag, multiple))
            await basic_ack(delivery_tag, multiple=multiple, wait=wait)

        second.basic_ack = record_ack  # type: ignore[method-assign]
        await eventually(lambda: _count(on(second, received), 10), "10 deliveries again")
        await asyncio.sleep(0.3)
        assert len(on(second, received)) == 10, "the prefetch was not restored, or two consumers"
        assert consumers_on(second) == 1

        holding.release.set()  # the held batch came on the closed channel: it is not acked
        await eventually(lambda: _count(on(second, holding.seen), 30), "all 30 on the new channel")
        await asyncio.sleep(0.2)
        tags = {delivery.delivery_tag for delivery in on(second, received)}
        assert acked and all(tag in tags for tag, _ in acked), (acked, sorted(tags))
        assert deliveries.registrations == 2 and deliveries.underlay is second, "channel lost"
        stale = [delivery for delivery in holding.seen if delivery.channel is first]
        assert stale and not any(delivery.settleable for delivery in stale)
    finally:
        await running.stop()
    assert await queue_length(amqp, settings.queue) == 0


async def _count(items: list[Delivery], wanted: int) -> bool:
    return len(items) >= wanted


Disruption = Callable[[Consumer], Awaitable[None]]


async def broker_closes_the_channel(running: Consumer) -> None:
    assert running.deliveries is not None
    await close_channel_from_the_broker(running.deliveries)


async def broker_closes_the_connection(running: Consumer) -> None:
    node = f"operations-{os.environ.get('OPERATIONS_AMQP_PORT', '5674')}@localhost"
    listed = await _ctl("-n", node, "list_connections", "pid", "client_properties", "-q")
    pids = [line.split("\t")[0] for line in listed.splitlines() if running.name in line]
    assert pids, f"no connection named {running.name}: {listed}"
    for pid in pids:
        await _ctl("-n", node, "close_connection", pid, "closed by the test")


async def queue_deleted(running: Consumer) -> None:
    connection = await aio_pika.connect(running.amqp_url)
    async with connection, connection.channel() as channel:
        await channel.queue_delete(running.queue_name)


async def rabbitmq_restarts(running: Consumer) -> None:
    restart = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "services.sh"), "restart-rabbitmq", env=dict(os.environ)
    )
    assert await asyncio.wait_for(restart.wait(), timeout=120) == 0


async def _ctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        RABBITMQCTL,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ERL_EPMD_ADDRESS": "127.0.0.1"},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def exactly_once_through(
    disruption: Disruption,
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: Any,
    operations: int = 300,
) -> ChannelConsumer:
    """A stream of create_order then order_created per operation, disrupted midway: every
    operation ends completed at version 2, and exactly one apply per message was counted."""
    await declared(amqp, settings)
    metrics = Registry()
    store = RedisStore(redis_client, 600, keys=Keys(settings.key_prefix))
    pipeline = Pipeline(PACCO, store, metrics, settings.max_message_bytes)
    running = consumer(settings, pipeline, metrics, prefetch=64, name=f"t-{uuid.uuid4().hex}")
    ops = [str(uuid.uuid4()) for _ in range(operations)]
    messages = [(m, op, new_id()) for op in ops for m in ("create_order", "order_created")]
    await running.start()
    try:
        deliveries, first = consuming_on(running)
        stream = SteadyPublisher(settings.amqp_url)
        streaming = asyncio.create_task(stream.run(messages, pace=0.003))
        await eventually(lambda: stream.reached(len(messages) // 3), "the stream to start")
        await disruption(running)
        await consuming_again(deliveries, first, 2)
        await asyncio.wait_for(streaming, timeout=120)
        assert stream.confirmed == len(messages)

        async def all_completed() -> bool:
            records = [await store.get(op) for op in ops]
            return all(r is not None and r.state.value == "completed" for r in records)

        await eventually(all_completed, "every operation to complete", timeout=60)
        await asyncio.sleep(0.3)
        for op in ops:
            record = await store.get(op)
            assert record is not None and record.version == 2, record
        counted = metrics.messages
        assert counted.value(kind="command", outcome="applied") == operations
        assert counted.value(kind="event", outcome="applied") == operations
        assert deliveries.underlay is not None
        assert consumers_on(deliveries.underlay) == 1
    finally:
        await running.stop()
    assert await queue_length(amqp, settings.queue) == 0
    return deliveries


@pytest.mark.slow
async def test_consumes_on_after_the_broker_closes_its_channel(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any
) -> None:
    deliveries = await exactly_once_through(broker_closes_the_channel, settings, redis_client, amqp)
    assert deliveries.registrations == 2


@pytest.mark.slow
async def test_consumes_on_after_the_broker_closes_its_connection(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any
) -> None:
    deliveries = await exactly_once_through(
        broker_closes_the_connection, settings, redis_client, amqp
    )
    assert deliveries.registrations == 2


async def test_consumes_on_after_its_queue_is_deleted(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any, publisher: Publisher
) -> None:
    """The broker cancels the consumer; the queue and its bindings are declared again and the
    consumer registers again. (What was in the deleted queue is gone, as with aio-pika.)"""
    await declared(amqp, settings)
    holding = Holding(hold=False)
    running = consumer(settings, holding, Registry(), prefetch=10, name=f"t-{uuid.uuid4().hex}")
    await running.start()
    try:
        deliveries, first = consuming_on(running)
        await queue_deleted(running)
        second = await consuming_again(deliveries, first, 2)
        ids = [await publisher.publish("create_order", new_id(), user="u") for _ in range(20)]

        async def all_seen() -> bool:
            return {delivery.message_id for delivery in holding.seen} >= set(ids)

        await eventually(all_seen, "messages published after the deletion")
        assert consumers_on(second) == 1 and deliveries.registrations == 2
    finally:
        await running.stop()


async def test_consuming_again_that_fails_unexpectedly_is_logged_and_counted(
    settings: Settings, amqp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The task that consumes again after the broker cancelled the consumer belongs to the
    consumer's background tasks: a failure it ends with is counted in the process's metrics."""
    await declared(amqp, settings)
    metrics = Registry()
    running = consumer(settings, Holding(hold=False), metrics, prefetch=10, name=f"t-{new_id()}")
    await running.start()
    try:
        deliveries, _ = consuming_on(running)

        async def broken() -> None:
            raise ValueError("not a broker error")

        deliveries._consume = broken  # type: ignore[method-assign]
        await queue_deleted(running)

        async def counted() -> bool:
            return metrics.background_task_failures.value(task="consume-again") == 1

        await eventually(counted, "the failure to be counted")
        assert "background task consume-again failed" in caplog.text
    finally:
        await running.stop()


@pytest.mark.broker_restart
@pytest.mark.timeout(240)
async def test_consumes_on_after_a_rabbitmq_restart(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any
) -> None:
    deliveries = await exactly_once_through(rabbitmq_restarts, settings, redis_client, amqp)
    assert deliveries.registrations >= 2
