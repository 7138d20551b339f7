"""``Idempotency-Key`` on ``POST /sagas/{name}`` and ``POST /orders`` (contract §13), against a
running service on the real servers: a repeat answers as the first did with the same operation
id, many at once start one saga, another body is refused, a bad key is refused before anything is
published, keys are per user, a failed publish frees the key, and a kept key expires."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis

from operations.amqp.publisher import AmqpPublisher, OutgoingMessage
from operations.pacco.demo import DemoServices
from operations.sagas.idempotency import RESERVATION_SECONDS
from operations.settings import Settings
from operations.store.keys import IdempotencyKeys, SagaKeys
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
    label = "orders" if route == "/orders" else "saga_start"
    assert service.service.metrics.idempotent_replays.value(route=label) == 49
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


class HeldPublisher:
    """The service's own publisher, holding each publish until ``release`` is set: a first
    request caught in flight, between its reservation and the broker's confirm."""

    def __init__(self, inner: AmqpPublisher) -> None:
        self.inner = inner
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, message: OutgoingMessage, *, confirm_within: float = 10.0) -> None:
        self.holding.set()
        await self.release.wait()
        await self.inner.publish(message, confirm_within=confirm_within)


@pytest.mark.slow
async def test_a_repeat_waits_for_the_first_request_still_in_flight(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    wire: Wire,
    redis_client: aioredis.Redis,
) -> None:
    """A repeat that arrives while the first request is still publishing answers with the
    first's operation once the broker has confirmed it; one still waiting after 5 s is
    answered 409, and the first goes on to start its saga."""
    runtime = service.service.sagas
    assert runtime is not None and runtime.publisher is not None
    user, body = str(uuid.uuid4()), order()
    bearer = token(user)
    for late in (False, True):
        held = HeldPublisher(runtime.publisher)
        working, runtime.publisher = runtime.publisher, cast(AmqpPublisher, held)
        key = str(uuid.uuid4())
        try:
            first = asyncio.create_task(
                http.post("/sagas/order_making", json=body, headers=headers(bearer, key))
            )
            await asyncio.wait_for(held.holding.wait(), 15)
            repeat = asyncio.create_task(
                http.post("/sagas/order_making", json=body, headers=headers(bearer, key))
            )
            if late:
                refused = await repeat
                assert refused.status_code == 409, refused.text
                assert refused.json()["code"] == "idempotency_key_in_flight"
                (reservation,) = await reservations(redis_client, settings)
                assert 0 < await redis_client.ttl(reservation) <= RESERVATION_SECONDS
            else:
                await asyncio.sleep(0.3)  # the repeat is waiting by then; it must keep waiting
                assert not repeat.done()
            held.release.set()
            started = await first
        finally:
            runtime.publisher = working
        assert started.status_code == 202 and "Idempotent-Replayed" not in started.headers
        if not late:
            replayed = await repeat
            assert operation_of(replayed) == operation_of(started)
            assert replayed.headers["Idempotent-Replayed"] == "true"
        await redis_client.delete(*await reservations(redis_client, settings))
    assert len(await published(wire)) == 2


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
