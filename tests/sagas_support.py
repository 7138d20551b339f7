"""Helpers for the saga tests: a recording publisher that can be told to fail, and a harness that
wires a store, an outbox relay and a coordinator together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from operations.metrics import Registry
from operations.sagas import Coordinator, Saga, SagaContext, SagaMessage, SagaStore
from operations.sagas.coordinator import Processed
from operations.sagas.outbox import OutboxRelay
from operations.sagas.records import SagaRecord
from operations.sagas.store import Loaded
from operations.states import State


@dataclass(frozen=True)
class Published:
    exchange: str
    routing_key: str
    body: dict[str, Any]
    correlation_id: str | None
    message_id: str
    message_context: dict[str, Any]
    saga: State | None


class BrokerDown(ConnectionError):
    """What the fake broker raises when told to fail."""


@dataclass
class FakePublisher:
    """Implements the outbox's ``Publisher`` protocol: records every confirmed message.

    ``failing`` makes every publish raise; ``fail_after`` lets that many more messages through,
    then fails every one after them."""

    published: list[Published] = field(default_factory=list)
    attempts: int = 0
    failing: bool = False
    fail_after: int | None = None

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: Mapping[str, Any],
        *,
        correlation_id: str | None,
        message_id: str,
        message_context: Mapping[str, Any],
        saga: State | None = None,
        confirm_within: float = 10.0,
    ) -> None:
        self.attempts += 1
        if self.failing:
            raise BrokerDown("the broker is down")
        if self.fail_after is not None:
            if self.fail_after <= 0:
                raise BrokerDown("the broker went down")
            self.fail_after -= 1
        self.published.append(
            Published(
                exchange,
                routing_key,
                dict(body),
                correlation_id,
                message_id,
                dict(message_context),
                saga,
            )
        )

    def recover(self) -> None:
        self.failing = False
        self.fail_after = None

    @property
    def names(self) -> list[str]:
        return [message.routing_key for message in self.published]

    def named(self, name: str) -> list[Published]:
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
        sagas: Sequence[type[Saga[Any]]],
        publisher: FakePublisher | None = None,
    ) -> Harness:
        publisher = publisher if publisher is not None else FakePublisher()
        metrics = Registry()
        relay = OutboxRelay(store, publisher, metrics)
        coordinator = Coordinator(list(sagas), store, relay, metrics)
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

    async def load(self, saga: str, saga_id: str) -> Loaded:
        loaded = await self.store.load(saga, saga_id)
        assert loaded is not None, f"saga {saga}:{saga_id} is not stored"
        return loaded

    async def record(self, saga: str, saga_id: str) -> SagaRecord:
        return (await self.load(saga, saga_id)).record


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Remove every key under ``prefix:`` (a test's own keys on a shared Redis)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
