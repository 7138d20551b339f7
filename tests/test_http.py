"""The HTTP API over a real socket: auth, ETag and long-polling, listing, service endpoints."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace

import httpx
import jwt
import pytest

from operations.auth.tokens import mint
from operations.settings import Settings
from tests.api import bearer, recorded
from tests.conftest import SECRET
from tests.support import Publisher, RunningService, new_id, start_service

Token = Callable[..., str]


async def test_the_owner_reads_in_any_guid_format(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    user, op = uuid.uuid4(), uuid.uuid4()
    await publisher.publish("create_order", op.hex, user=user.hex)
    response = await recorded(http, str(op).upper(), bearer(token(f"{{{user}}}")))
    assert response.json()["id"] == str(op)
    assert response.json()["userId"] == str(user)


async def test_401_and_404_rules(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    owner, op = new_id(), new_id()
    await publisher.publish("create_order", op, user=owner)
    await recorded(http, op, bearer(token(owner)))

    path = f"/operations/{op}"
    no_exp = jwt.encode({"sub": owner}, SECRET, algorithm="HS256")
    refused = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {token(owner)}"},
        "garbage": bearer("abc.def.ghi"),
        "wrong key": bearer(mint("another-secret-0123456789-0123456789", owner)),
        "expired": bearer(mint(SECRET, owner, ttl_seconds=-10)),
        "alg none": bearer(jwt.encode({"sub": owner, "exp": 4_000_000_000}, "", algorithm="none")),
        "no exp": bearer(no_exp),
    }
    unknown_path = f"/operations/{new_id()}"
    # The token is checked before the lookup: an unknown id tells a bad token nothing.
    paths = (path, f"{path}/history", unknown_path, f"{unknown_path}/history")
    for label, headers in refused.items():
        for target in paths:
            response = await http.get(target, headers=headers)
            assert response.status_code == 401, (label, target)
            assert response.json()["code"] == "unauthorized", (label, target)
            assert response.headers["www-authenticate"].startswith("Bearer")

    other = await http.get(path, headers=bearer(token(new_id())))
    unknown = await http.get(f"/operations/{new_id()}", headers=bearer(token(owner)))
    for response in (other, unknown):
        assert response.status_code == 404
        assert response.json()["code"] == "operation_not_found"
    # Another user's operation is indistinguishable from an unknown one.
    assert other.json()["reason"] == f"operation '{uuid.UUID(op)}' was not found"
    admin = await http.get(path, headers=bearer(token("someone", "admin")))
    assert admin.status_code == 200
    history = await http.get(f"{path}/history", headers=bearer(token(new_id())))
    assert history.status_code == 404


async def test_etag_and_conditional_reads(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    user, op = new_id(), new_id()
    headers = bearer(token(user))
    await publisher.publish("create_order", op, user=user)
    first = await recorded(http, op, headers)
    assert first.headers["etag"] == '"1"'
    unchanged = await http.get(f"/operations/{op}", headers={**headers, "If-None-Match": '"1"'})
    assert unchanged.status_code == 304
    other = await http.get(f"/operations/{op}", headers={**headers, "If-None-Match": '"7"'})
    assert other.status_code == 200


async def test_long_poll_returns_on_the_next_change(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    user, op = new_id(), new_id()
    headers = bearer(token(user))
    await publisher.publish("create_order", op, user=user)
    await recorded(http, op, headers)

    poll = asyncio.create_task(
        http.get(f"/operations/{op}?wait=20", headers={**headers, "If-None-Match": '"1"'})
    )
    await asyncio.sleep(0.3)
    assert not poll.done(), "the long poll returned before any change"
    await publisher.publish("order_created", op, user=user)
    response = await asyncio.wait_for(poll, timeout=10)
    assert response.status_code == 200
    assert (response.json()["state"], response.headers["etag"]) == ("completed", '"2"')


async def test_long_poll_times_out_unchanged_and_finished_returns_at_once(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    user, op, done = new_id(), new_id(), new_id()
    headers = bearer(token(user))
    await publisher.publish("create_order", op, user=user)
    await publisher.publish("order_created", done, user=user)
    await recorded(http, op, headers)
    await recorded(http, done, headers)

    loop = asyncio.get_running_loop()
    started = loop.time()
    timed_out = await http.get(
        f"/operations/{op}?wait=0.5", headers={**headers, "If-None-Match": '"1"'}
    )
    assert timed_out.status_code == 304
    assert loop.time() - started >= 0.45

    started = loop.time()
    finished = await http.get(
        f"/operations/{done}?wait=30", headers={**headers, "If-None-Match": '"1"'}
    )
    assert finished.status_code == 304 and loop.time() - started < 5

    for bad in ("-1", "61", "soon", "nan"):
        # A bad wait is refused before the lookup, for a known id and an unknown one alike.
        for target in (op, new_id()):
            response = await http.get(f"/operations/{target}?wait={bad}", headers=headers)
            assert response.status_code == 400, (bad, target)
            assert response.json()["code"] == "invalid_query"
            assert "wait" in response.json()["reason"]
        # The token still comes first.
        response = await http.get(f"/operations/{op}?wait={bad}", headers=bearer("abc.def.ghi"))
        assert response.status_code == 401


async def test_listing_is_per_user_filtered_and_paged(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    alice, bob = new_id(), new_id()
    alice_ops = [new_id() for _ in range(5)]
    for index, op in enumerate(alice_ops):
        message = "order_created" if index % 2 else "create_order"
        await publisher.publish(message, op, user=alice, name=f"job{index % 2}")
    bob_op = new_id()
    await publisher.publish("create_order", bob_op, user=bob)
    await recorded(http, bob_op, bearer(token(bob)))
    await recorded(http, alice_ops[-1], bearer(token(alice)))

    seen: list[str] = []
    url: str | None = "/operations?limit=2"
    while url:
        page = (await http.get(url, headers=bearer(token(alice)))).json()
        seen.extend(item["id"] for item in page["items"])
        url = f"/operations?limit=2&cursor={page['next']}" if page["next"] else None
    assert seen == [str(uuid.UUID(op)) for op in reversed(alice_ops)]

    done = await http.get("/operations?state=completed", headers=bearer(token(alice)))
    assert {item["id"] for item in done.json()["items"]} == {
        str(uuid.UUID(alice_ops[1])),
        str(uuid.UUID(alice_ops[3])),
    }
    named = await http.get("/operations?name=job0", headers=bearer(token(alice)))
    assert len(named.json()["items"]) == 3

    snooping = await http.get(f"/operations?userId={alice}", headers=bearer(token(bob)))
    assert snooping.status_code == 403
    admin = await http.get(f"/operations?userId={bob}", headers=bearer(token("x", "admin")))
    assert [item["id"] for item in admin.json()["items"]] == [str(uuid.UUID(bob_op))]
    everyone = await http.get("/operations", headers=bearer(token("x", "admin")))
    assert len(everyone.json()["items"]) == 6

    for query in ("state=done", "limit=0", "limit=x", "cursor=%%%"):
        response = await http.get(f"/operations?{query}", headers=bearer(token(alice)))
        assert response.status_code == 400, query
        assert set(response.json()) == {"code", "reason"}
    assert (await http.get("/operations")).status_code == 401


async def test_service_endpoints(service: RunningService, http: httpx.AsyncClient) -> None:
    assert (await http.get("/health")).json() == {"status": "ok"}
    ready = await http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "rabbitmq": True,
        "redis": True,
        "redis-pool": True,
        "consumer": True,
        "saga-consumer": True,
    }
    spec = (await http.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert {"/operations/{id}", "/operations", "/operations/{id}/history"} <= set(spec["paths"])
    missing = await http.get("/nowhere")
    assert missing.status_code == 404 and set(missing.json()) == {"code", "reason"}
    assert (await http.get("/metrics")).headers["content-type"].startswith("text/plain")


async def test_anonymous_reads_when_enabled(
    settings: Settings, redis_client: object, amqp: object, publisher: Publisher
) -> None:
    async with start_service(replace(settings, anonymous_reads=True)) as running:
        op = new_id()
        await publisher.publish("create_order", op, user=new_id())
        async with httpx.AsyncClient(base_url=running.url) as client:
            response = await recorded(client, op, {})
            assert response.json()["state"] == "pending"
            bad = await client.get(f"/operations/{op}", headers=bearer("not.a.token"))
            assert bad.status_code == 401
            assert (await client.get("/operations")).status_code == 401


async def test_ready_is_503_without_the_broker(settings: Settings, redis_client: object) -> None:
    broken = replace(settings, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    from operations.service import Service

    service = Service(broken)
    transport = httpx.ASGITransport(app=service.asgi)
    await service.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/ready")
            assert response.status_code == 503
            assert response.json()["checks"] == {
                "rabbitmq": False,
                "redis": True,
                "redis-pool": True,
                "consumer": True,
                "saga-consumer": True,
            }
    finally:
        await service.stop()


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/operations/x", "/operations/{id}"),
        ("/operations/x?wait=5", "/operations/{id}"),
        ("/operations/x/history", "/operations/{id}/history"),
        ("/operations", "/operations"),
    ],
)
async def test_store_outage_is_a_503_as_documented(
    settings: Settings, path: str, route: str, token: Token
) -> None:
    broken = replace(
        settings, redis_url="redis://127.0.0.1:1/0", amqp_url="amqp://x:y@127.0.0.1:1/"
    )
    from operations.service import Service

    service = Service(broken)
    transport = httpx.ASGITransport(app=service.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(path, headers=bearer(token("u")))
        spec = (await client.get("/openapi.json")).json()
    assert response.status_code == 503
    assert response.json()["code"] == "store_unavailable"
    documented = spec["paths"][route]["get"]["responses"]["503"]
    schema = documented["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Error"}
    assert "store_unavailable" in documented["description"]
    await service.store.close()
