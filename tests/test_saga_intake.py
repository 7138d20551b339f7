"""The saga intake over the real RabbitMQ and Redis: early messages go round the `.retry` queue
with the configured delay a bounded number of times and are then dead-lettered with the reason and
attempt count, or handled once their saga starts; a message outside any saga's flow is acked; a
step that keeps losing its commit is retried the same way."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aio_pika
import orjson
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.consumer import Consumer
from operations.amqp.copies import (
    ATTEMPTS_HEADER,
    EXCHANGE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
)
from operations.sagas import RedisSagaStore, Saga, SagaContext, SagaMessage, SagaStatus, start, step
from operations.sagas import coordinator as coordinator_module
from operations.sagas.intake import SagaIntake
from operations.settings import Settings
from operations.store.shards import Shards
from operations.wire import Binding, ExchangeKind
from tests.sagas_support import Harness
from tests.support import Publisher, RunningService, dead_letters, eventually, start_service

EXCHANGE = "parcels-test"
MESSAGES = ("parcel_sent", "parcel_scanned", "parcel_arrived")
# Run inside parcel_scanned's step at the hub, before its commit: another process's write.
INTERFERE: list[Callable[[str], Awaitable[None]]] = []


@dataclass
class ParcelData:
    scans: list[str] = field(default_factory=list)


class ParcelSaga(Saga[ParcelData]):
    name = "parcel"
    data_type = ParcelData

    @start("parcel_sent")
    async def sent(self, message: SagaMessage, context: SagaContext) -> None:
        pass

    @step("parcel_scanned")
    async def scanned(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.scans.append(str(message.get("where")))
        if message.get("where") == "hub":
            for interfere in list(INTERFERE):
                await interfere(self.id)

    @step("parcel_arrived")
    async def arrived(self, message: SagaMessage, context: SagaContext) -> None:
        self.complete()


@dataclass
class Rig:
    """A saga consumer as the service runs it, on its own queues, for ParcelSaga."""

    harness: Harness
    consumer: Consumer
    channel: aio_pika.abc.AbstractChannel
    exchange: aio_pika.abc.AbstractExchange
    queue: str

    async def publish(self, name: str, saga_id: str, saga_header: bool = True, **body: Any) -> None:
        headers: dict[str, Any] = {"message_context": '{"user":{"id":"u"}}'}
        if saga_header:
            headers["Saga"] = bytearray(b"Pending")
        await self.exchange.publish(
            aio_pika.Message(
                orjson.dumps(body),
                headers=headers,
                correlation_id=saga_id,
                message_id=uuid.uuid4().hex,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=name,
        )

    def outcomes(self, outcome: str) -> int:
        return int(self.harness.metrics.sagas.value(saga="parcel", outcome=outcome))

    async def waiting(self, queue: str) -> int:
        declared = await self.channel.declare_queue(queue, durable=True, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)


@pytest.fixture(autouse=True)
def no_interference() -> None:
    INTERFERE.clear()


def rig_factory(
    amqp: AbstractRobustConnection, amqp_url: str, redis_client: aioredis.Redis
) -> Callable[[int, float], Awaitable[Rig]]:
    async def make(retries: int, delay: float) -> Rig:
        queue = f"saga-intake-test-{uuid.uuid4().hex[:8]}"
        harness = Harness.build(RedisSagaStore(redis_client, prefix="t"), [ParcelSaga])
        bindings = [Binding(EXCHANGE, ExchangeKind.TOPIC, name) for name in MESSAGES]
        consumer = Consumer(
            amqp_url,
            queue,
            f"{queue}.dead-letter",
            bindings,
            SagaIntake(harness.coordinator, retries, delay),
            harness.metrics,
            prefetch=16,
            batch_size=8,
            retry_queue=f"{queue}.retry",
            name="saga-intake-test",
        )
        await consumer.start()
        channel = await amqp.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return Rig(harness, consumer, channel, exchange, queue)

    return make


@pytest.fixture
async def rig(
    amqp: AbstractRobustConnection, amqp_url: str, redis_client: aioredis.Redis
) -> AsyncIterator[Callable[[int, float], Awaitable[Rig]]]:
    made: list[Rig] = []
    make = rig_factory(amqp, amqp_url, redis_client)

    async def tracked(retries: int, delay: float) -> Rig:
        made.append(await make(retries, delay))
        return made[-1]

    yield tracked
    for one in made:
        await one.consumer.stop()
        for name in (one.queue, f"{one.queue}.retry", f"{one.queue}.dead-letter"):
            await one.channel.queue_delete(name)
        await one.channel.close()


async def test_an_early_message_is_retried_with_the_delay_then_dead_lettered(
    rig: Callable[[int, float], Awaitable[Rig]], amqp: AbstractRobustConnection
) -> None:
    r = await rig(3, 0.2)
    saga_id = str(uuid.uuid4())
    began = time.monotonic()
    await r.publish("parcel_arrived", saga_id)
    (dead,) = await dead_letters(amqp, f"{r.queue}.dead-letter", 1)
    took = time.monotonic() - began

    headers = dead.headers or {}
    assert (
        headers[REASON_HEADER]
        == "saga message parcel_arrived: no saga to take it yet after 3 retries"
    )
    assert headers[ATTEMPTS_HEADER] == 3
    assert headers[EXCHANGE_HEADER] == EXCHANGE
    assert headers[ROUTING_KEY_HEADER] == "parcel_arrived"
    assert dead.correlation_id == saga_id
    assert r.outcomes("early") == 4  # the delivery and its three retries, no more
    assert took >= 3 * 0.2  # each retry waited out the delay in the retry queue
    assert await r.harness.store.load("parcel", saga_id) is None
    assert await r.waiting(f"{r.queue}.retry") == 0


async def test_an_early_message_is_handled_once_its_saga_starts_during_the_retries(
    rig: Callable[[int, float], Awaitable[Rig]],
) -> None:
    r = await rig(50, 0.2)
    saga_id = str(uuid.uuid4())
    await r.publish("parcel_scanned", saga_id, where="hub")

    async def seen_early() -> bool:
        return r.outcomes("early") >= 1

    await eventually(seen_early, "the early message to be retried")
    await r.publish("parcel_sent", saga_id)

    async def scanned() -> bool:
        loaded = await r.harness.store.load("parcel", saga_id)
        return loaded is not None and loaded.record.data["scans"] == ["hub"]

    await eventually(scanned, "the early message to be handled", timeout=20)
    record = await r.harness.record("parcel", saga_id)
    assert [s.message for s in record.steps] == ["parcel_sent", "parcel_scanned"]
    assert 1 <= r.outcomes("early") < 50
    assert r.outcomes("handled") == 2
    assert await r.waiting(f"{r.queue}.dead-letter") == 0


async def test_an_early_message_without_a_saga_header_is_acked(
    rig: Callable[[int, float], Awaitable[Rig]],
) -> None:
    r = await rig(5, 0.2)
    stray, sentinel = str(uuid.uuid4()), str(uuid.uuid4())
    await r.publish("parcel_arrived", stray, saga_header=False)
    await r.publish("parcel_sent", sentinel)  # settled after the stray one: same queue, in order

    async def sentinel_started() -> bool:
        return await r.harness.store.load("parcel", sentinel) is not None

    await eventually(sentinel_started, "the sentinel saga to start")
    # Long enough for a retry to have come back, were there one.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert await r.waiting(f"{r.queue}.retry") == 0
        await asyncio.sleep(0.05)
    assert r.outcomes("early") == 1
    assert await r.waiting(f"{r.queue}.dead-letter") == 0
    assert await r.waiting(r.queue) == 0
    assert await r.harness.store.load("parcel", stray) is None


async def test_a_step_that_keeps_conflicting_is_retried_then_handled(
    rig: Callable[[int, float], Awaitable[Rig]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "MAX_CONFLICT_RETRIES", 1)
    r = await rig(5, 0.2)
    other = Harness.build(r.harness.store, [ParcelSaga])  # another process on the same store
    saga_id = str(uuid.uuid4())
    await other.send("parcel_sent", correlation_id=saga_id, message_id=uuid.uuid4().hex)

    async def once(interfering_id: str) -> None:
        INTERFERE.clear()  # only the first attempt loses
        await other.send("parcel_scanned", {"where": "elsewhere"}, correlation_id=interfering_id)

    INTERFERE.append(once)
    await r.publish("parcel_scanned", saga_id, where="hub")

    async def scanned() -> bool:
        # The outcome is counted just after the commit the data shows: wait for both.
        record = await r.harness.record("parcel", saga_id)
        return record.data["scans"] == ["elsewhere", "hub"] and r.outcomes("handled") == 1

    await eventually(scanned, "the conflicting step to be retried and applied", timeout=20)

    async def counted() -> bool:  # the outcome is counted just after the commit
        return r.outcomes("handled") == 1

    await eventually(counted, "the retried step to be counted as handled", timeout=5)
    assert r.outcomes("conflict") == 1
    assert await r.waiting(f"{r.queue}.dead-letter") == 0


async def test_a_step_that_never_stops_conflicting_is_dead_lettered(
    rig: Callable[[int, float], Awaitable[Rig]],
    amqp: AbstractRobustConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(coordinator_module, "MAX_CONFLICT_RETRIES", 1)
    r = await rig(2, 0.1)
    other = Harness.build(r.harness.store, [ParcelSaga])
    saga_id = str(uuid.uuid4())
    await other.send("parcel_sent", correlation_id=saga_id, message_id=uuid.uuid4().hex)

    async def always(interfering_id: str) -> None:
        await other.send("parcel_scanned", {"where": "x"}, correlation_id=interfering_id)

    INTERFERE.append(always)
    await r.publish("parcel_scanned", saga_id, where="hub")
    (dead,) = await dead_letters(amqp, f"{r.queue}.dead-letter", 1)
    headers = dead.headers or {}
    assert headers[REASON_HEADER] == "saga message parcel_scanned: kept conflicting after 2 retries"
    assert headers[ATTEMPTS_HEADER] == 2
    assert r.outcomes("conflict") == 3
    assert "hub" not in (await r.harness.record("parcel", saga_id)).data["scans"]


# ------------------------------------------------ the service, configured by the environment


@pytest.fixture
async def quick_service(
    settings: Settings, redis_client: aioredis.Redis, amqp: object
) -> AsyncIterator[tuple[RunningService, Settings]]:
    configured = Settings.from_env(
        {"OPERATIONS_SAGA_EARLY_RETRIES": "2", "OPERATIONS_SAGA_RETRY_DELAY_MS": "250"}
    )
    quick = replace(
        settings,
        saga_early_retries=configured.saga_early_retries,
        saga_retry_delay_ms=configured.saga_retry_delay_ms,
    )
    async with start_service(quick) as running:
        yield running, quick


async def test_the_service_retries_an_early_order_event_as_configured(
    quick_service: tuple[RunningService, Settings],
    publisher: Publisher,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
) -> None:
    running, quick = quick_service
    metrics = running.service.metrics
    lost, late = str(uuid.uuid4()), str(uuid.uuid4())

    # Early for ever: two retries 250 ms apart, then the saga queue's dead-letter queue.
    began = time.monotonic()
    await publisher.publish("order_created", lost, user="u", saga="Pending", body={"orderId": "o"})
    (dead,) = await dead_letters(amqp, f"{quick.saga_queue}.dead-letter", 1)
    assert time.monotonic() - began >= 2 * 0.25
    headers = dead.headers or {}
    assert (
        headers[REASON_HEADER]
        == "saga message order_created: no saga to take it yet after 2 retries"
    )
    assert headers[ATTEMPTS_HEADER] == 2
    assert metrics.sagas.value(saga="order_making", outcome="early") == 3

    # Early, then its saga starts during the retries: handled.
    await publisher.publish("order_created", late, user="u", saga="Pending", body={"orderId": "o2"})

    async def retried() -> bool:
        return metrics.sagas.value(saga="order_making", outcome="early") >= 4

    await eventually(retried, "the early order_created to be retried")
    await publisher.publish(
        "make_order",
        late,
        user="u",
        saga="Pending",
        body={"orderId": "o2", "customerId": "c", "parcelIds": ["p"]},
    )
    store = RedisSagaStore(redis_client, quick.key_prefix, Shards(quick.redis_shards))

    async def created() -> bool:
        loaded = await store.load("order_making", late)
        return loaded is not None and [s.message for s in loaded.record.steps] == [
            "make_order",
            "order_created",
        ]

    await eventually(created, "order_created to be handled once the saga exists", timeout=20)
    loaded = await store.load("order_making", late)
    assert loaded is not None and loaded.record.status is SagaStatus.PENDING
