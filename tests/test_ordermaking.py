"""Pacco's order-maker saga end to end over the real RabbitMQ: POST /orders, the simulated Pacco
services, and the user watching one operation over Socket.IO and HTTP (contract §7)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from operations.pacco.demo import DemoServices, FailurePlan
from operations.sagas import RedisSagaStore, SagaStatus
from operations.settings import Settings
from tests.api import answered, bearer, order_body
from tests.conftest import SECRET
from tests.live import LiveClient
from tests.sagas_support import Sent, Wire
from tests.support import RunningService, eventually, run_operations, start_service

Token = Callable[..., str]
ORDER_MAKER_PATH = [
    "make_order",
    "order_created",
    "parcel_added_to_order",
    "vehicle_assigned_to_order",
    "order_approved",
]
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
    return await http.post("/orders", json=order_body(parcels, **extra), headers=bearer(token))


def names(records: list[dict[str, Any]]) -> list[str]:
    """Step names as the user saw them, without consecutive repeats."""
    seen: list[str] = []
    for record in records:
        if not seen or seen[-1] != record["name"]:
            seen.append(record["name"])
    return seen


def same_context(sent: Sent, started: Sent) -> bool:
    """The saga's message carries the user's context from MakeOrder, named after the step."""
    without_name = {key: value for key, value in sent.context.items() if key != "name"}
    started_without_name = {k: v for k, v in started.context.items() if k != "name"}
    return sent.context.get("name") == sent.routing_key and without_name == started_without_name


def agrees(read: dict[str, Any], pushed: dict[str, Any]) -> bool:
    """GET /operations/{id} answers the record the socket pushed last (which adds a cursor)."""
    return all(pushed.get(key) == value for key, value in read.items())


async def test_the_happy_path_is_watched_live_to_completed(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    clients: Callable[..., LiveClient],
    wire: Wire,
) -> None:
    user = str(uuid.uuid4())
    live = clients()
    await live.connect({"token": token(user)})
    async with DemoServices(settings.amqp_url, latency_ms=5):
        response = await make_order(http, token(user), parcels=3, orderId="order-42")
        assert response.status_code == 202
        operation = response.json()["operationId"]
        assert response.json() == {"operationId": operation, "orderId": "order-42"}
        assert response.headers["Request-ID"] == operation
        assert response.headers["Resource-ID"] == "order-42"
        final = await live.wait_for_state(operation, "completed", timeout=30)
        sent = await wire.until(operation, "make_order_completed")

    assert [m.routing_key for m in sent] == ["make_order", "make_order_completed"]
    started, completed = sent
    assert started.saga == "Pending" and started.context["user"]["id"] == user
    assert completed.saga == "Completed"
    assert completed.body == {"orderId": "order-42"}
    assert same_context(completed, started), (completed.context, started.context)

    records = live.records(operation)
    assert names(records) == HAPPY_STEPS, [(r["name"], r["version"]) for r in records]
    assert all(r["state"] == "pending" for r in records[:-1])
    assert final["name"] == "make_order_completed"
    assert records[-1] == final, "nothing may follow the completed state"
    read = await answered(http, f"/operations/{operation}", bearer(token(user)))
    assert read["state"] == "completed" and read["version"] == final["version"]
    assert agrees(read, final), (read, final)

    saga = (await http.get(f"/operations/{operation}/saga", headers=bearer(token(user)))).json()
    assert saga["path"] == [{"message": m, "status": "done"} for m in ORDER_MAKER_PATH]

    store = RedisSagaStore(aioredis.Redis.from_url(settings.redis_url), settings.key_prefix)
    loaded = await store.load("order_making", operation)
    assert loaded is not None and loaded.record.status is SagaStatus.COMPLETED
    assert sorted(loaded.record.data["added_parcel_ids"]) == sorted(
        loaded.record.data["parcel_ids"]
    )
    await store.redis.aclose()


async def assert_compensated_on_the_wire_and_over_http(
    http: httpx.AsyncClient,
    wire: Wire,
    live: LiveClient,
    operation: str,
    user_token: str,
    code: str,
) -> dict[str, Any]:
    """CancelOrder (Saga: Rejected) then MakeOrderRejected went out with the operation's
    correlation id and the user's context; the socket and GET /operations/{id} agree on the
    rejection. Returns the rejected record the socket pushed."""
    rejected = await live.wait_for_state(operation, "rejected", timeout=30)
    sent = await wire.until(operation, "make_order_rejected")
    keys = [m.routing_key for m in sent]
    assert keys == ["make_order", "cancel_order", "make_order_rejected"], keys
    started, cancel, ended = sent
    for message in (cancel, ended):
        assert message.saga == "Rejected", message
        assert same_context(message, started), (message.context, started.context)
    order_id = started.body["orderId"]
    assert cancel.body == {"orderId": order_id, "code": code, "reason": cancel.body["reason"]}
    assert ended.body == cancel.body
    assert rejected["code"] == code and rejected["reason"] == cancel.body["reason"]

    records = live.records(operation)
    assert records[-1] == rejected, "nothing may follow the rejected state"
    read = await answered(http, f"/operations/{operation}", bearer(user_token))
    assert (read["state"], read["code"], read["reason"]) == ("rejected", code, rejected["reason"])
    assert read["version"] == rejected["version"]
    assert agrees(read, rejected), (read, rejected)
    return rejected


@pytest.mark.parametrize(
    "failing",
    ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", "reserve_resource"],
)
async def test_each_rejection_compensates_and_reaches_the_user(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    clients: Callable[..., LiveClient],
    wire: Wire,
    failing: str,
) -> None:
    user = str(uuid.uuid4())
    live = clients()
    await live.connect({"token": token(user)})
    plan = FailurePlan({failing: 1.0})
    async with DemoServices(settings.amqp_url, latency_ms=0, failures=plan):
        response = await make_order(http, token(user))
        operation = response.json()["operationId"]
        rejected = await assert_compensated_on_the_wire_and_over_http(
            http, wire, live, operation, token(user), f"{failing}_failed"
        )

        store = RedisSagaStore(aioredis.Redis.from_url(settings.redis_url), settings.key_prefix)

        async def compensated() -> Any:
            loaded = await store.load("order_making", operation)
            return loaded if loaded and loaded.record.status.finished else None

        loaded = await eventually(compensated, "the saga to finish")
        await store.redis.aclose()

    assert failing in rejected["reason"]
    assert rejected["name"] == "cancel_order"
    saga = (await http.get(f"/operations/{operation}/saga", headers=bearer(token(user)))).json()
    progress = {step["message"]: step["status"] for step in saga["path"]}
    assert progress["make_order"] == "compensated" and progress["order_approved"] == "remaining"
    seen = names(live.records(operation))
    assert seen[-1] == "cancel_order" and failing in seen
    assert loaded.record.status is SagaStatus.REJECTED
    assert loaded.record.code == f"{failing}_failed"
    assert all(step.compensated for step in loaded.record.steps[:-1])

    history = await http.get(f"/operations/{operation}/history", headers=bearer(token(user)))
    transitions = [(t["state"], t["name"]) for t in history.json()["items"]]
    assert transitions[-1] == ("rejected", "cancel_order")


async def test_the_deadline_rejects_and_compensates(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    token: Token,
    wire: Wire,
) -> None:
    quick = {"OPERATIONS_SAGA_DEADLINE_SECONDS": "1"}
    async with (
        start_service(settings, quick) as running,
        httpx.AsyncClient(base_url=running.url) as http,
    ):
        user = str(uuid.uuid4())
        live = LiveClient(running.url)
        await live.connect({"token": token(user)})
        try:
            async with DemoServices(settings.amqp_url, latency_ms=3_000):
                operation = (await make_order(http, token(user))).json()["operationId"]
                rejected = await assert_compensated_on_the_wire_and_over_http(
                    http, wire, live, operation, token(user), "deadline_exceeded"
                )
        finally:
            await live.close()
    assert rejected["name"] == "cancel_order"


async def test_demo_orders_runs_as_a_process_and_its_sagas_finish(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    clients: Callable[..., LiveClient],
) -> None:
    """``operations demo-orders`` (as ./scripts/run.sh starts it) places its orders over HTTP;
    with reservations failing half the time (seeded), some sagas complete and some are
    compensated, as the user sees them live and over HTTP. It stops by itself after --count."""
    user, count = f"demo-{uuid.uuid4().hex[:8]}", 6
    live = clients()
    await live.connect({"token": token(user)})
    env = {
        **os.environ,
        "OPERATIONS_HOST": "127.0.0.1",
        "OPERATIONS_PORT": str(service.port),
        "OPERATIONS_JWT_SECRET": SECRET,
    }
    plan = FailurePlan({"reserve_resource": 0.5})
    async with DemoServices(settings.amqp_url, latency_ms=0, failures=plan, seed=1):
        code, _, stderr = await run_operations(
            *("demo-orders", "--user", user, "--every", "0.2", "--count", str(count)),
            *("--seed", "3"),
            env=env,
        )
        assert code == 0, stderr
        lines = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        placed = [line["correlation_id"] for line in lines if "placed" in line["message"]]
        assert len(placed) == count == len(set(placed)), stderr
        assert not [line for line in lines if line["level"] != "info"], stderr

        def finished(client: LiveClient) -> bool:
            ends = {r["id"] for r in client.records() if r["state"] != "pending"}
            return set(placed) <= ends

        await live.wait_for(finished, f"{count} demo orders to finish", timeout=60)

    final = {op: live.records(op)[-1] for op in placed}
    states = sorted(record["state"] for record in final.values())
    assert set(states) == {"completed", "rejected"}, states
    for record in final.values():
        if record["state"] == "rejected":
            assert (record["code"], record["name"]) == ("reserve_resource_failed", "cancel_order")
        else:
            assert record["name"] == "make_order_completed"
    listed = await http.get("/operations", params={"limit": 50}, headers=bearer(token(user)))
    items = {item["id"]: item for item in listed.json()["items"]}
    assert set(items) == set(placed)
    for op, record in final.items():
        assert (items[op]["state"], items[op]["version"]) == (record["state"], record["version"])


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
        response = await http.post("/orders", json=body, headers=bearer(token("u")))
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid_order"
    single = await http.post(
        "/orders",
        json={"CustomerId": "c", "ParcelId": "p"},
        headers=bearer(token("u")),
    )
    assert single.status_code == 202


def allowed_by(schema: dict[str, Any], body: dict[str, Any]) -> bool:
    """Presence rules of a JSON Schema object (``required`` and ``anyOf`` of ``required``), for
    bodies whose fields all have the right type."""

    def has(rule: dict[str, Any]) -> bool:
        return all(name in body for name in rule.get("required", []))

    return has(schema) and any(has(branch) for branch in schema.get("anyOf", [{}]))


async def test_the_openapi_document_describes_post_orders_as_it_behaves(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    spec = (await http.get("/openapi.json")).json()
    post = spec["paths"]["/orders"]["post"]
    reference = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][reference.rsplit("/", 1)[-1]]
    assert {"202", "400", "401"} <= set(post["responses"])
    assert set(post["responses"]["202"]["headers"]) == {
        "Request-ID",
        "Resource-ID",
        "Idempotent-Replayed",
    }
    assert schema["properties"]["parcelIds"]["maxItems"] == 100  # the saga's MAX_PARCELS
    bodies: list[dict[str, Any]] = [
        {"customerId": "c", "parcelIds": ["p"]},
        {"customerId": "c", "parcelId": "p"},
        {"customerId": "c", "parcelIds": ["p"], "parcelId": "q", "orderId": "o"},
        {"customerId": "c"},
        {"parcelIds": ["p"]},
        {"parcelId": "p", "orderId": "o"},
        {},
    ]
    for body in bodies:
        response = await http.post("/orders", json=body, headers=bearer(token("u")))
        assert response.status_code in (202, 400), response.text
        assert allowed_by(schema, body) == (response.status_code == 202), body
