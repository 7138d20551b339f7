"""What the saga tests share: a recording publisher that can be told to fail, a harness that
wires a store, an outbox relay and a coordinator together, steps of the sample trip saga, and
the fixtures (made available by ``pytest_plugins`` in conftest.py) that run each contract test
against the memory and the Redis store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from operations.amqp.publisher import OutgoingMessage
from operations.metrics import Registry
from operations.pacco.ordermaking import OrderMakingSaga
from operations.sagas import (
    Coordinator,
    MemorySagaStore,
    Processed,
    RedisSagaStore,
    Saga,
    SagaContext,
    SagaMessage,
    SagaOutcome,
    SagaStore,
)
from operations.sagas import outbox as outbox_module
from operations.sagas.outbox import OutboxRelay
from operations.sagas.records import SagaRecord
from operations.sagas.store import Loaded
from tests.sample_sagas import FAR_FUTURE, GATES, JOURNAL, TripSaga
from tests.support import eventually, new_id


class BrokerDown(ConnectionError):
    """What the fake broker raises when told to fail."""


@dataclass
class FakePublisher:
    """Implements the outbox's ``Publisher`` protocol: records every confirmed message.

    ``failing`` makes every publish raise; ``fail_after`` lets that many more messages through,
    then fails every one after them."""

    published: list[OutgoingMessage] = field(default_factory=list)
    attempts: int = 0
    failing: bool = False
    fail_after: int | None = None

    async def publish(self, message: OutgoingMessage, *, confirm_within: float = 10.0) -> None:
        self.attempts += 1
        if self.failing:
            raise BrokerDown("the broker is down")
        if self.fail_after is not None:
            if self.fail_after <= 0:
                raise BrokerDown("the broker went down")
            self.fail_after -= 1
        self.published.append(message)

    def recover(self) -> None:
        self.failing = False
        self.fail_after = None

    @property
    def names(self) -> list[str]:
        return [message.routing_key for message in self.published]

    def named(self, name: str) -> list[OutgoingMessage]:
        return [message for message in self.published if message.routing_key == name]

    def since(self, count: int) -> list[str]:
        return self.names[count:]


@dataclass
class Harness:
    store: SagaStore
    publisher: FakePublisher
    relay: OutboxRelay
    coordinator: Coordinator
    metrics: Registry

    @classmethod
    def build(
        cls,
        store: SagaStore,
        saga_types: Sequence[type[Saga[Any]]],
        publisher: FakePublisher | None = None,
    ) -> Harness:
        publisher = publisher if publisher is not None else FakePublisher()
        metrics = Registry()
        relay = OutboxRelay(store, publisher, metrics)
        coordinator = Coordinator(list(saga_types), store, relay, metrics)
        return cls(store, publisher, relay, coordinator, metrics)

    async def send(
        self,
        name: str,
        body: Mapping[str, Any] | None = None,
        *,
        correlation_id: str | None,
        message_id: str | None = None,
        message_context: Mapping[str, Any] | None = None,
    ) -> list[Processed]:
        message = SagaMessage(name, dict(body or {}), message_id)
        context = SagaContext(correlation_id, dict(message_context or {}))
        return await self.coordinator.process(message, context)

    async def load(self, saga_name: str, saga_id: str) -> Loaded:
        loaded = await self.store.load(saga_name, saga_id)
        assert loaded is not None, f"saga {saga_name}:{saga_id} is not stored"
        return loaded

    async def record(self, saga_name: str, saga_id: str) -> SagaRecord:
        return (await self.load(saga_name, saga_id)).record


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Remove every key under ``prefix:`` (a test's own keys on a shared Redis)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
def journal() -> Iterator[defaultdict[str, list[str]]]:
    """A clean journal and no gates for each test; a gate left shut is opened at the end."""
    JOURNAL.clear()
    GATES.clear()
    yield JOURNAL
    JOURNAL.clear()
    for gate in GATES.values():
        gate.set()
    GATES.clear()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> SagaStore:
    if request.param == "memory":
        return MemorySagaStore()
    client: aioredis.Redis = request.getfixturevalue("redis_client")
    return RedisSagaStore(client, prefix="t")


@pytest.fixture
def h(store: SagaStore) -> Harness:
    return Harness.build(store, [TripSaga, OrderMakingSaga])


@pytest.fixture
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay's flush picks up outboxes left unconfirmed for 2 s; here, at once."""
    monkeypatch.setattr(outbox_module, "RETRY_AFTER_SECONDS", 0.0)


@pytest.fixture
async def second_redis(servers: tuple[str, str]) -> AsyncIterator[aioredis.Redis]:
    """Another client on the same Redis, as another process (or the same one, restarted) has."""
    client = aioredis.Redis.from_url(servers[1])
    yield client
    await client.aclose()


@dataclass
class Calls:
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    async def __call__(self, message: SagaMessage, context: SagaContext) -> None:
        self.seen.append((message.name, context.correlation_id))


async def snapshot(h: Harness, saga_name: str, saga_id: str) -> tuple[int, dict[str, Any]]:
    loaded = await h.load(saga_name, saga_id)
    return loaded.version, loaded.record.to_json()


async def start_trip(h: Harness, trip: str, **body: Any) -> None:
    assert await h.send(
        "trip_requested", {"traveller": "ann", **body}, correlation_id=trip, message_id=new_id()
    ) == [Processed("trip", trip, SagaOutcome.HANDLED)]


async def step_trip(h: Harness, trip: str, *names: str) -> None:
    for name in names:
        result = await h.send(name, {"note": name}, correlation_id=trip, message_id=new_id())
        assert result == [Processed("trip", trip, SagaOutcome.HANDLED)], name


async def nothing_stored(store: SagaStore) -> None:
    assert await store.pending(FAR_FUTURE) == []
    assert await store.due(FAR_FUTURE) == []
    if isinstance(store, RedisSagaStore):
        assert await store.redis.keys("t:*") == []
    else:
        assert isinstance(store, MemorySagaStore)
        assert store.records == {}


async def until_blocked(trip: str, step: str) -> None:
    """Wait until the compensation of ``step`` has started (and is held at its gate)."""
    await eventually(
        lambda: _started(trip, step), f"the compensation of {step} to start", timeout=10
    )


async def _started(trip: str, step: str) -> bool:
    return f"undo:{step}" in JOURNAL[trip]


async def make_order(
    h: Harness, saga_id: str, order: str, parcels: list[str], **context: Any
) -> list[Processed]:
    return await h.send(
        "make_order",
        {"orderId": order, "customerId": "customer-1", "parcelIds": parcels},
        correlation_id=saga_id,
        message_id=new_id(),
        message_context={"Name": "make_order", **context},
    )


async def order_event(h: Harness, saga_id: str, name: str, **body: Any) -> list[Processed]:
    return await h.send(name, body, correlation_id=saga_id, message_id=new_id())


@dataclass(frozen=True)
class Sent:
    """One message of the saga as it crossed the broker."""

    routing_key: str
    correlation_id: str | None
    saga: str | None
    context: dict[str, Any]
    body: dict[str, Any]

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> Sent:
        headers = message.headers or {}
        saga, context = headers.get("Saga"), headers.get("message_context")
        if isinstance(saga, bytes | bytearray):
            saga = saga.decode()
        return cls(
            routing_key=message.routing_key or "",
            correlation_id=message.correlation_id,
            saga=saga if isinstance(saga, str) else None,
            context=orjson.loads(context) if isinstance(context, str | bytes | bytearray) else {},
            body=orjson.loads(message.body),
        )


class Wire:
    """A test queue bound to the order-maker's own messages: the MakeOrder that starts the saga,
    the CancelOrder it compensates with and the MakeOrderCompleted or MakeOrderRejected it ends
    with, in the order the broker routed them."""

    BINDINGS = (
        ("ordermaker", "make_order"),
        ("orders", "cancel_order"),
        ("ordermaker", "make_order_completed"),
        ("ordermaker", "make_order_rejected"),
    )

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue
        self.seen: list[Sent] = []

    def of(self, operation: str) -> list[Sent]:
        return [sent for sent in self.seen if sent.correlation_id == operation]

    async def until(self, operation: str, last: str, timeout: float = 30) -> list[Sent]:
        async def arrived() -> bool:
            while (message := await self.queue.get(no_ack=True, fail=False)) is not None:
                self.seen.append(Sent.of(message))
            return any(sent.routing_key == last for sent in self.of(operation))

        await eventually(arrived, f"{last} of {operation} on the broker", timeout=timeout)
        return self.of(operation)


@pytest.fixture
async def wire(amqp: AbstractRobustConnection) -> AsyncIterator[Wire]:
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for exchange, routing_key in Wire.BINDINGS:
            declared = await channel.declare_exchange(
                exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            await queue.bind(declared, routing_key=routing_key)
        yield Wire(queue)
