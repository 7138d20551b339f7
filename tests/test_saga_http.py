"""Saga statuses from outside: GET /sagas and the operations_saga_instances gauge of GET /metrics
while a compensation is held and after it has failed, and the OpenAPI status enum."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from operations.http import openapi
from operations.sagas import Processed, RedisSagaStore, SagaOutcome, SagaStatus
from operations.settings import Settings
from operations.store.shards import Shards
from tests.api import bearer
from tests.sagas_support import Harness, start_trip, step_trip, until_blocked
from tests.sample_sagas import GATES, TripSaga
from tests.scrape import Scrape
from tests.support import RunningService, eventually, new_id, start_service

pytestmark = pytest.mark.usefixtures("journal")


def gauge(text: str, saga_name: str, status: str) -> float | None:
    return Scrape(text).value("operations_saga_instances", saga=saga_name, status=status)


async def test_compensating_and_failed_sagas_through_get_sagas_and_metrics(
    service: RunningService,
    http: httpx.AsyncClient,
    token: Callable[..., str],
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    """A saga type run by a coordinator in another process, on the service's Redis: the service
    lists it by status and counts it in GET /metrics while its compensation is held, then once
    that compensation has failed for good."""
    store = RedisSagaStore(redis_client, settings.key_prefix, Shards(settings.redis_shards))
    h = Harness.build(store, [TripSaga])
    admin = bearer(token("ops", "admin"))
    trip, other = new_id(), new_id()
    await start_trip(h, trip, broken="trip_requested")
    await step_trip(h, trip, "flight_booked")
    await start_trip(h, other)
    gate = GATES[trip, "flight_booked"] = asyncio.Event()
    refusal = asyncio.create_task(
        h.send("trip_refused", {"reason": "no visa"}, correlation_id=trip, message_id=new_id())
    )
    await until_blocked(trip, "flight_booked")

    async def listed(status: str) -> list[dict[str, Any]]:
        response = await http.get("/sagas", params={"status": status}, headers=admin)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    compensating = await listed("compensating")
    assert [(s["id"], s["status"], s["reason"]) for s in compensating] == [
        (trip, "compensating", "no visa")
    ]
    assert "resumeAt" not in compensating[0] and "compensateSteps" not in compensating[0]
    assert [s["id"] for s in await listed("pending")] == [other]

    async def scraped(expected: dict[str, float]) -> str | None:
        text = (await http.get("/metrics")).text
        seen = {status: gauge(text, "trip", status) for status in expected}
        return text if seen == expected else None

    held = {"pending": 1.0, "compensating": 1.0, "compensation_failed": 0.0, "rejected": 0.0}
    text = await eventually(lambda: scraped(held), "the compensating saga in /metrics")
    assert Scrape(text).types["operations_saga_instances"] == "gauge"

    gate.set()
    result = await asyncio.wait_for(refusal, 10)
    assert result == [Processed("trip", trip, SagaOutcome.COMPENSATION_FAILED)]
    assert await listed("compensating") == []
    failed = await listed("compensation_failed")
    assert [(s["id"], s["status"]) for s in failed] == [(trip, "compensation_failed")]
    assert [
        (s["message"], s["compensated"], s["compensationError"]) for s in failed[0]["steps"]
    ] == [
        ("trip_requested", False, "RuntimeError: cannot undo trip_requested"),
        ("flight_booked", True, None),
        ("trip_refused", False, None),
    ]
    ended = {"pending": 1.0, "compensating": 0.0, "compensation_failed": 1.0, "completed": 0.0}
    await eventually(lambda: scraped(ended), "the failed compensation in /metrics")

    response = await http.get("/sagas", params={"status": "lost"}, headers=admin)
    assert response.status_code == 400
    assert "compensating" in response.json()["reason"]


def test_the_openapi_status_enum_is_every_saga_status() -> None:
    parameters = openapi.document()["paths"]["/sagas"]["get"]["parameters"]
    (status,) = [p for p in parameters if p["name"] == "status"]
    assert status["schema"]["enum"] == [s.value for s in SagaStatus]
    assert "compensating" in status["schema"]["enum"]


async def test_with_the_sagas_off_get_sagas_answers_an_empty_list_to_admins_only(
    settings: Settings, redis_client: aioredis.Redis, amqp: object, token: Callable[..., str]
) -> None:
    async with (
        start_service(replace(settings, sagas=False)) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as client,
    ):
        admin = bearer(token("ops", "admin"))
        user = bearer(token("alice"))
        listed = await client.get("/sagas", headers=admin)
        assert (listed.status_code, listed.json()) == (200, {"items": []})
        assert (await client.get("/sagas", headers=user)).status_code == 403
        assert (await client.get("/sagas")).status_code == 401
        one = await client.get(f"/operations/{new_id()}/saga", headers=admin)
        assert one.status_code == 404 and one.json()["code"] == "operation_not_found"
        assert (await client.post("/orders", headers=user, json={})).status_code in {404, 405}
        types = await client.get("/sagas/types", headers=user)
        assert (types.status_code, types.json()) == (200, {"items": []})
        assert (await client.post("/sagas/order_making", headers=user, json={})).status_code in {
            404,
            405,
        }
        cancel = await client.post(f"/operations/{new_id()}/cancel", headers=user)
        assert (cancel.status_code, cancel.json()["code"]) == (404, "operation_not_found")
