"""``POST /sagas/{name}`` (contract §8): the start message published through the broker as
``POST /orders`` publishes it, ``Prefer: wait=N`` (RFC 7240), and every error it answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from operations.http import openapi
from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests.api import bearer, order_with_id
from tests.sagas_support import Wire
from tests.support import RunningService, eventually

Token = Callable[..., str]


async def test_it_publishes_the_start_message_through_the_broker(
    service: RunningService, settings: Settings, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    user = str(uuid.uuid4())
    body = order_with_id()
    async with DemoServices(settings.amqp_url, latency_ms=0):
        response = await http.post("/sagas/order_making", json=body, headers=bearer(token(user)))
        assert response.status_code == 202, response.text
        operation = response.json()["operationId"]
        assert response.json() == {"operationId": operation}
        assert response.headers["Request-ID"] == operation
        assert response.headers["Location"] == f"/operations/{operation}"
        assert "Preference-Applied" not in response.headers
        sent = await wire.until(operation, "make_order_completed")
    started = sent[0]
    assert (started.routing_key, started.saga, started.body) == ("make_order", "Pending", body)
    assert started.context["user"]["id"] == user and started.context["name"] == "make_order"
    assert started.context["correlationId"] == operation

    async def completed() -> bool:
        read = await http.get(f"/operations/{operation}", headers=bearer(token(user)))
        state: str = read.json()["state"]
        return state == "completed"

    await eventually(completed, "the order to complete")


async def test_prefer_wait_answers_200_with_the_final_record(
    service: RunningService, settings: Settings, http: httpx.AsyncClient, token: Token
) -> None:
    user = str(uuid.uuid4())
    async with DemoServices(settings.amqp_url, latency_ms=0):
        response = await http.post(
            "/sagas/order_making",
            json=order_with_id(),
            headers=bearer(token(user), Prefer="respond-async, wait=30"),
        )
    assert response.status_code == 200, response.text
    record = response.json()
    assert (record["state"], record["name"], record["userId"]) == (
        "completed",
        "make_order_completed",
        user,
    )
    assert response.headers["Request-ID"] == record["id"]
    assert response.headers["Location"] == f"/operations/{record['id']}"
    assert response.headers["Preference-Applied"] == "wait=30"
    assert response.headers["ETag"] == f'"{record["version"]}"'


async def test_prefer_wait_answers_202_when_the_operation_is_not_final_in_time(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    """No simulated services run: the saga waits for an OrderCreated that never comes."""
    began = time.monotonic()
    response = await http.post(
        "/sagas/order_making", json=order_with_id(), headers=bearer(token("u"), Prefer="wait=1")
    )
    waited = time.monotonic() - began
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "wait=1"
    assert response.headers["Location"] == f"/operations/{response.json()['operationId']}"
    assert 1.0 <= waited < 5.0, waited


async def test_prefer_wait_is_capped_at_60_and_odd_preferences_are_ignored(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    ignored = await http.post(
        "/sagas/order_making",
        json=order_with_id(),
        headers=bearer(token("u"), Prefer="wait=soon, handling=lenient"),
    )
    assert ignored.status_code == 202 and "Preference-Applied" not in ignored.headers


@pytest.mark.parametrize(
    ("name", "content", "status", "code"),
    [
        ("order_making", b"[1, 2]", 400, "invalid_body"),
        ("order_making", b"{not json", 400, "invalid_body"),
        ("order_making", b'{"a": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
        ("no_such_saga", b"{}", 404, "saga_not_found"),
    ],
)
async def test_bad_starts_get_their_error_codes(
    service: RunningService,
    http: httpx.AsyncClient,
    token: Token,
    name: str,
    content: bytes,
    status: int,
    code: str,
) -> None:
    response = await http.post(
        f"/sagas/{name}",
        content=content,
        headers=bearer(token("u"), **{"Content-Type": "application/json"}),
    )
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert status in {int(s) for s in openapi_responses("/sagas/{name}")}


async def test_it_needs_a_token_and_a_broker(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    assert (await http.post("/sagas/order_making", json=order_with_id())).status_code == 401
    runtime = service.service.sagas
    assert runtime is not None
    publisher, runtime.publisher = runtime.publisher, None
    try:
        down = await http.post(
            "/sagas/order_making", json=order_with_id(), headers=bearer(token("u"))
        )
        orders = await http.post("/orders", json=order_with_id(), headers=bearer(token("u")))
    finally:
        runtime.publisher = publisher
    assert (down.status_code, down.json()["code"]) == (503, "broker_unavailable")
    assert (orders.status_code, orders.json()["code"]) == (503, "broker_unavailable")


def openapi_responses(path: str) -> dict[str, Any]:
    responses: dict[str, Any] = openapi.document()["paths"][path]["post"]["responses"]
    return responses


def test_the_openapi_document_lists_every_status_it_answers() -> None:
    assert set(openapi_responses("/sagas/{name}")) == {
        "200",
        "202",
        "400",
        "401",
        "404",
        "409",
        "413",
        "422",
        "503",
    }
