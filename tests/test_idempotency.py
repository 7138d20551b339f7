"""``Idempotency-Key`` on ``POST /sagas/{name}`` and ``POST /orders`` (contract §13), against a
running service on the real servers: a repeat answers as the first did with the same operation
id, many at once start one saga, another body is refused, a bad key is refused before anything is
published, keys are per user, a failed publish frees the key, and a kept key expires."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis

from operations.amqp.publisher import AmqpPublisher
from operations.keys import IdempotencyKeys, SagaKeys
from operations.pacco.demo import DemoServices
from operations.sagas.http_start import SagaStarter
from operations.sagas.idempotency import (
    RESERVATION_SECONDS,
    Idempotency,
    IdempotentRequest,
    Started,
)
from operations.settings import Settings
from tests.sagas_support import Sent, Wire
from tests.support import RunningService, eventually, start_service

Token = Callable[..., str]

ROUTES = ["/sagas/order_making", "/orders"]


def order(order_id: bool = True) -> dict[str, Any]:
    body = {"customerId": str(uuid.uuid4()), "parcelIds": [str(uuid.uuid4())]}
    return {**body, "orderId": f"order-{uuid.uuid4().hex[:8]}"} if order_id else body


def headers(token: str, key: str | bytes | None = None, **more: str) -> dict[str, Any]:
    sent: dict[str, Any] = {"Authorization": f"Bearer {token}", **more}
    if key is not None:
        sent["Idempotency-Key"] = key
    return sent


def operation_of(response: httpx.Response) -> str:
    assert response.status_code in {200, 202}, response.text
    body = response.json()
    operation: str = body.get("operationId") or body["id"]
    assert response.headers["Request-ID"] == operation
    return operation


async def published(wire: Wire) -> list[str]:
    """The start messages (MakeOrder) on the broker so far, by operation id. Every answer came
    after the broker's confirm, so each message of an answered request is already queued."""
    while (message := await wire.queue.get(no_ack=True, fail=False)) is not None:
        wire.seen.append(Sent.of(message))
    return [s.correlation_id or "" for s in wire.seen if s.routing_key == "make_order"]


async def reservations(redis_client: aioredis.Redis, settings: Settings) -> list[bytes]:
    pattern = IdempotencyKeys(settings.key_prefix).reservation("*")
    return [key async for key in redis_client.scan_iter(match=pattern)]


@pytest.mark.parametrize("route", ROUTES)
async def test_fifty_concurrent_starts_with_one_key_start_one_saga(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    wire: Wire,
    redis_client: aioredis.Redis,
    route: str,
) -> None:
    user, key, body = str(uuid.uuid4()), str(uuid.uuid4()), order()
    answers = await asyncio.gather(
        *(http.post(route, json=body, headers=headers(token(user), key)) for _ in range(50))
    )
    assert {answer.status_code for answer in answers} == {202}
    operations = {operation_of(answer) for answer in answers}
    assert len(operations) == 1
    (operation,) = operations
    assert sum(answer.headers.get("Idempotent-Replayed") == "true" for answer in answers) == 49
    if route == "/orders":
        assert len({answer.headers["Resource-ID"] for answer in answers}) == 1
    assert await published(wire) == [operation]

    sagas = SagaKeys(settings.key_prefix).index(0)

    async def one_saga() -> bool:
        return await redis_client.zcard(sagas) == 1

    await eventually(one_saga, "the saga")
    assert await redis_client.zrange(sagas, 0, -1) == [f"order_making:{operation}".encode()]


async def test_a_repeat_after_the_saga_finished_answers_as_the_first_did(
    service: RunningService, settings: Settings, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    user, key, body = str(uuid.uuid4()), str(uuid.uuid4()), order()
    wait = headers(token(user), key, Prefer="wait=30")
    async with DemoServices(settings.amqp_url, latency_ms=0):
        first = await http.post("/sagas/order_making", json=body, headers=wait)
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "completed", first.text
    assert "Idempotent-Replayed" not in first.headers

    again = await http.post("/sagas/order_making", json=body, headers=wait)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    for name in ("Request-ID", "Location", "ETag", "Preference-Applied"):
        assert again.headers[name] == first.headers[name], name
    assert again.headers["Idempotent-Replayed"] == "true"

    # Keys and body order do not matter: the body is compared as a JSON document.
    reordered = dict(reversed(body.items()))
    plain = await http.post(
        "/sagas/order_making", json=reordered, headers=headers(token(user), key)
    )
    assert plain.status_code == 202
    assert operation_of(plain) == first.json()["id"]
    assert plain.headers["Location"] == f"/operations/{first.json()['id']}"
    assert plain.headers["Idempotent-Replayed"] == "true"
    assert await published(wire) == [first.json()["id"]]


async def test_a_repeated_order_answers_with_the_first_orders_ids(
    service: RunningService, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    """The order id is made by the service when the body has none: a repeat gets the first's."""
    user, key, body = str(uuid.uuid4()), str(uuid.uuid4()), order(order_id=False)
    first = await http.post("/orders", json=body, headers=headers(token(user), key))
    again = await http.post("/orders", json=body, headers=headers(token(user), f'"{key}"'))
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json() == first.json()
    assert again.headers["Resource-ID"] == first.headers["Resource-ID"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await published(wire) == [first.json()["operationId"]]


@pytest.mark.parametrize("route", ROUTES)
async def test_the_same_key_with_another_body_is_refused_and_publishes_nothing(
    service: RunningService, http: httpx.AsyncClient, token: Token, wire: Wire, route: str
) -> None:
    user, key = str(uuid.uuid4()), str(uuid.uuid4())
    first = await http.post(route, json=order(), headers=headers(token(user), key))
    other = await http.post(route, json=order(), headers=headers(token(user), key))
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert await published(wire) == [operation_of(first)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "key",
    ["", "k" * 256, "clé".encode(), b"tab\there", '""'],
    ids=["empty", "256-characters", "not-ascii", "control", "empty-quoted"],
)
async def test_a_bad_key_is_refused_before_anything_is_published_or_stored(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    wire: Wire,
    redis_client: aioredis.Redis,
    route: str,
    key: str | bytes,
) -> None:
    refused = await http.post(route, json=order(), headers=headers(token("u"), key))
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_idempotency_key")
    longest = await http.post(route, json=order(), headers=headers(token("u"), "k" * 255))
    assert await published(wire) == [operation_of(longest)]
    assert len(await reservations(redis_client, settings)) == 1


async def test_two_keys_in_one_request_are_refused(
    service: RunningService, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    sent = [("Authorization", f"Bearer {token('u')}"), ("Idempotency-Key", "a")]
    sent.append(("Idempotency-Key", "b"))
    refused = await http.post("/orders", json=order(), headers=sent)
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_idempotency_key")
    assert await published(wire) == []


async def test_keys_are_per_user(
    service: RunningService, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    key, body = str(uuid.uuid4()), order()
    alice, bob = headers(token("alice"), key), headers(token("bob"), key)
    by_alice = operation_of(await http.post("/sagas/order_making", json=body, headers=alice))
    by_bob = await http.post("/sagas/order_making", json=body, headers=bob)
    assert operation_of(by_bob) != by_alice
    assert "Idempotent-Replayed" not in by_bob.headers
    alice_again = await http.post("/sagas/order_making", json=body, headers=alice)
    assert operation_of(alice_again) == by_alice
    # The same key on the other route is another key too.
    order_by_alice = await http.post("/orders", json=body, headers=alice)
    assert operation_of(order_by_alice) not in {by_alice, operation_of(by_bob)}
    assert sorted(await published(wire)) == sorted(
        [by_alice, operation_of(by_bob), operation_of(order_by_alice)]
    )


async def test_a_publish_the_broker_refuses_frees_the_key_for_the_retry(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    wire: Wire,
    redis_client: aioredis.Redis,
) -> None:
    """The first request's publish fails on a connection that has gone (503); the retry, once
    the broker is back, starts the saga; the next one replays it."""
    runtime = service.service.sagas
    assert runtime is not None
    gone = await aio_pika.connect_robust(settings.amqp_url)
    await gone.close()
    working, runtime.publisher = runtime.publisher, AmqpPublisher(gone)
    user, key, body = str(uuid.uuid4()), str(uuid.uuid4()), order()
    try:
        down = await http.post("/orders", json=body, headers=headers(token(user), key))
    finally:
        runtime.publisher = working
    assert (down.status_code, down.json()["code"]) == (503, "broker_unavailable")
    assert await reservations(redis_client, settings) == []

    retry = await http.post("/orders", json=body, headers=headers(token(user), key))
    assert retry.status_code == 202 and "Idempotent-Replayed" not in retry.headers
    again = await http.post("/orders", json=body, headers=headers(token(user), key))
    assert operation_of(again) == operation_of(retry)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await published(wire) == [operation_of(retry)]


async def test_a_repeat_waits_for_the_first_request_still_in_flight(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    wire: Wire,
) -> None:
    """A reservation made and confirmed as the first request's publish would: the repeat,
    arriving in between, answers with its operation once it is confirmed, and publishes
    nothing; one that is never confirmed is answered 409 after the wait."""
    user, key, body = str(uuid.uuid4()), str(uuid.uuid4()), order()
    starter = _starter(service)
    request = IdempotentRequest.of("saga_start", "/sagas/order_making", key, body)
    reservation = starter.reservation(user, request)
    first = Started(str(uuid.uuid4()))
    held = await starter._reserve(reservation, "first", request.fingerprint, first)
    assert held is None

    async def confirm_later() -> None:
        await asyncio.sleep(0.5)
        await starter._call(reservation, "confirm", "first", 60_000)

    confirming = asyncio.create_task(confirm_later())
    repeat = await http.post("/sagas/order_making", json=body, headers=headers(token(user), key))
    await confirming
    assert operation_of(repeat) == first.operation_id
    assert repeat.headers["Idempotent-Replayed"] == "true"

    stuck = IdempotentRequest.of("saga_start", "/sagas/order_making", "stuck", body)
    stuck_key = starter.reservation(user, stuck)
    assert await starter._reserve(stuck_key, "gone", stuck.fingerprint, Started("x")) is None
    refused = await http.post(
        "/sagas/order_making", json=body, headers=headers(token(user), "stuck")
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "idempotency_key_in_flight")
    assert await published(wire) == []
    assert 0 < await starter.redis.ttl(stuck_key) <= RESERVATION_SECONDS


async def test_a_kept_key_expires_within_the_setting(
    settings: Settings,
    token: Token,
    redis_client: aioredis.Redis,
    amqp: object,
) -> None:
    kept = replace(settings, idempotency_seconds=120)
    async with (
        start_service(kept) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        started = await http.post("/orders", json=order(), headers=headers(token("u"), "k-1"))
        assert started.status_code == 202, started.text
    (reservation,) = await reservations(redis_client, kept)
    assert 0 < await redis_client.ttl(reservation) <= 120


def _starter(service: RunningService) -> Idempotency:
    """The running service's ``Idempotency-Key`` reservations (its saga starter's)."""
    for route in service.service.http.routes:
        endpoint = getattr(route, "endpoint", None)
        owner = getattr(endpoint, "__self__", None)
        starter = getattr(owner, "starter", None)
        if isinstance(starter, SagaStarter) and starter.idempotency is not None:
            return starter.idempotency
    raise AssertionError("no saga starter with idempotency")
