"""Pacco's order-maker saga end to end over the real RabbitMQ: POST /orders, the simulated Pacco
services, and the user watching one operation over Socket.IO and HTTP (contract §7)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from operations.demo import DemoServices, FailurePlan
from operations.sagas import RedisSagaStore, SagaStatus
from operations.settings import Settings
from tests.live import LiveClient
from tests.support import RunningService, eventually, start_service

Token = Callable[..., str]
# Each step the saga publishes renames the operation. The services' events carry the context of
# the command they answer (as Convey forwards it), so they confirm a step without renaming it.
HAPPY_STEPS = [
    "make_order",
    "create_order",
    "add_parcel_to_order",
    "assign_vehicle_to_order",
    "reserve_resource",
    "make_order_completed",
]


async def make_order(
    http: httpx.AsyncClient, token: str, parcels: int = 2, **extra: Any
) -> httpx.Response:
    body = {
        "customerId": str(uuid.uuid4()),
        "parcelIds": [str(uuid.uuid4()) for _ in range(parcels)],
    }
    body.update(extra)
    return await http.post("/orders", json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def watcher(service: RunningService) -> AsyncIterator[Callable[[str], LiveClient]]:
    made: list[LiveClient] = []

    def make(token: str) -> LiveClient:
        client = LiveClient(service.url)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def names(records: list[dict[str, Any]]) -> list[str]:
    """Step names as the user saw them, without consecutive repeats."""
    seen: list[str] = []
    for record in records:
        if not seen or seen[-1] != record["name"]:
            seen.append(record["name"])
    return seen


async def test_the_happy_path_is_watched_live_to_completed(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    watcher: Callable[[str], LiveClient],
) -> None:
    user = str(uuid.uuid4())
    live = watcher(token(user))
    await live.connect({"token": token(user)})
    async with DemoServices(settings.amqp_url, latency_ms=5):
        response = await make_order(http, token(user), parcels=3, orderId="order-42")
        assert response.status_code == 202
        operation = response.json()["operationId"]
        assert response.json() == {"operationId": operation, "orderId": "order-42"}
        assert response.headers["Request-ID"] == operation
        assert response.headers["Resource-ID"] == "order-42"
        final = await live.wait_for_state(operation, "completed", timeout=30)

    records = live.records(operation)
    assert names(records) == HAPPY_STEPS, [(r["name"], r["version"]) for r in records]
    assert all(r["state"] == "pending" for r in records[:-1])
    assert final["name"] == "make_order_completed"
    read = await http.get(
        f"/operations/{operation}", headers={"Authorization": f"Bearer {token(user)}"}
    )
    assert read.json()["state"] == "completed" and read.json()["version"] == final["version"]

    store = RedisSagaStore(aioredis.Redis.from_url(settings.redis_url), settings.key_prefix)
    loaded = await store.load("order_making", operation)
    assert loaded is not None and loaded.record.status is SagaStatus.COMPLETED
    assert sorted(loaded.record.data["added_parcel_ids"]) == sorted(
        loaded.record.data["parcel_ids"]
    )
    await store.redis.aclose()


@pytest.mark.parametrize(
    "failing",
    ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", "reserve_resource"],
)
async def test_each_rejection_compensates_and_reaches_the_user(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    watcher: Callable[[str], LiveClient],
    failing: str,
) -> None:
    user = str(uuid.uuid4())
    live = watcher(token(user))
    await live.connect({"token": token(user)})
    plan = FailurePlan({failing: 1.0})
    async with DemoServices(settings.amqp_url, latency_ms=0, failures=plan):
        response = await make_order(http, token(user))
        operation = response.json()["operationId"]
        rejected = await live.wait_for_state(operation, "rejected", timeout=30)

        store = RedisSagaStore(aioredis.Redis.from_url(settings.redis_url), settings.key_prefix)

        async def compensated() -> Any:
            loaded = await store.load("order_making", operation)
            return loaded if loaded and loaded.record.status.finished else None

        loaded = await eventually(compensated, "the saga to finish")
        await store.redis.aclose()

    assert rejected["code"] == f"{failing}_failed"
    assert failing in rejected["reason"]
    assert rejected["name"] == "cancel_order"
    seen = names(live.records(operation))
    assert seen[-1] == "cancel_order" and failing in seen
    assert loaded.record.status is SagaStatus.REJECTED
    assert loaded.record.code == f"{failing}_failed"
    assert all(step.compensated for step in loaded.record.steps[:-1])

    history = await http.get(
        f"/operations/{operation}/history", headers={"Authorization": f"Bearer {token(user)}"}
    )
    transitions = [(t["state"], t["name"]) for t in history.json()["items"]]
    assert transitions[-1] == ("rejected", "cancel_order")


async def test_the_deadline_rejects_and_compensates(
    settings: Settings, redis_client: aioredis.Redis, amqp: object, token: Token
) -> None:
    quick = replace(settings, saga_deadline_seconds=1)
    async with start_service(quick) as running, httpx.AsyncClient(base_url=running.url) as http:
        user = str(uuid.uuid4())
        live = LiveClient(running.url)
        await live.connect({"token": token(user)})
        async with DemoServices(settings.amqp_url, latency_ms=3_000):
            operation = (await make_order(http, token(user))).json()["operationId"]
            rejected = await live.wait_for_state(operation, "rejected", timeout=20)
        await live.close()
    assert rejected["code"] == "deadline_exceeded"


async def test_post_orders_validates_and_needs_a_token(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    assert (
        await http.post("/orders", json={"customerId": "c", "parcelId": "p"})
    ).status_code == 401
    bad = [
        {},
        {"customerId": "c"},
        {"customerId": "c", "parcelIds": []},
        {"customerId": "c", "parcelIds": [1]},
        {"customerId": "", "parcelId": "p"},
        {"customerId": "c", "parcelId": "p", "orderId": 5},
    ]
    for body in bad:
        response = await http.post(
            "/orders", json=body, headers={"Authorization": f"Bearer {token('u')}"}
        )
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid_order"
    single = await http.post(
        "/orders",
        json={"CustomerId": "c", "ParcelId": "p"},
        headers={"Authorization": f"Bearer {token('u')}"},
    )
    assert single.status_code == 202
