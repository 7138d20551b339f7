"""Hostile and careless clients: other origins, other users, forged and foreign tokens, oversized
bodies."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest
import socketio

from operations.auth.tokens import mint
from operations.settings import Settings
from tests.api import bearer
from tests.conftest import SECRET
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, start_service

Token = Callable[..., str]
EVIL = "http://evil.example"


async def connect_from(url: str, origin: str, token: str) -> LiveClient:
    live = LiveClient(url)
    try:
        await live.client.connect(
            url,
            auth={"token": token},
            transports=["websocket"],
            headers={"Origin": origin},
            wait_timeout=10,
        )
    except socketio.exceptions.ConnectionError:
        await live.close()
        raise
    return live


async def test_other_origins_are_refused_by_default(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect_from(service.url, EVIL, token("u"))
    same = await connect_from(service.url, service.url, token("u"))
    await same.close()
    preflight = await http.options(
        "/operations", headers={"Origin": EVIL, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    read = await http.get("/health", headers={"Origin": EVIL})
    assert "access-control-allow-origin" not in read.headers


async def test_configured_origins_are_allowed_and_only_they(
    settings: Settings, redis_client: object, amqp: object, token: Token
) -> None:
    app = "https://app.example.com"
    async with start_service(replace(settings, allowed_origins=(app,))) as running:
        live = await connect_from(running.url, app, token("u"))
        await live.close()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await connect_from(running.url, EVIL, token("u"))
        async with httpx.AsyncClient(base_url=running.url) as http:
            allowed = await http.options(
                "/operations", headers={"Origin": app, "Access-Control-Request-Method": "GET"}
            )
            assert allowed.headers["access-control-allow-origin"] == app
            refused = await http.get("/health", headers={"Origin": EVIL})
            assert "access-control-allow-origin" not in refused.headers


def test_a_bad_origin_setting_stops_start_up() -> None:
    from operations.errors import SettingsError

    with pytest.raises(SettingsError, match="OPERATIONS_ALLOWED_ORIGINS"):
        Settings.from_env({"OPERATIONS_ALLOWED_ORIGINS": "app.example.com"})
    parsed = Settings.from_env({"OPERATIONS_ALLOWED_ORIGINS": "https://a.example/, http://b:8080"})
    assert parsed.allowed_origins == ("https://a.example", "http://b:8080")


async def test_issuer_and_audience_are_enforced_when_configured(
    settings: Settings, redis_client: object, amqp: object
) -> None:
    strict = replace(settings, jwt_issuer="https://id.example", jwt_audience="operations")
    async with start_service(strict) as running, httpx.AsyncClient(base_url=running.url) as http:
        good = mint(SECRET, "u", issuer="https://id.example", audience="operations")
        for bad in (
            mint(SECRET, "u"),
            mint(SECRET, "u", issuer="https://other.example", audience="operations"),
            mint(SECRET, "u", issuer="https://id.example", audience="billing"),
        ):
            response = await http.get("/operations", headers=bearer(bad))
            assert response.status_code == 401
            with pytest.raises(socketio.exceptions.ConnectionError):
                await connect_from(running.url, running.url, bad)
        ok = await http.get("/operations", headers=bearer(good))
        assert ok.status_code == 200


async def test_no_operation_leaks_across_users(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    users = [str(uuid.uuid4()) for _ in range(3)]
    owned = {user: [str(uuid.uuid4()) for _ in range(4)] for user in users}
    sockets = {}
    for user in users:
        sockets[user] = LiveClient(service.url)
        await sockets[user].connect({"token": token(user)})
    for user, ops in owned.items():
        for op in ops:
            await publisher.publish("create_order", op, user=user)
    for user, ops in owned.items():
        for op in ops:
            await sockets[user].wait_for_state(op, "pending")
    for user in users:
        mine = set(owned[user])
        assert {r["id"] for r in sockets[user].records()} == mine
        listed = await http.get("/operations", headers=bearer(token(user)))
        assert {item["id"] for item in listed.json()["items"]} == mine
        for other in users:
            if other == user:
                continue
            for op in owned[other]:
                for path in (f"/operations/{op}", f"/operations/{op}/history"):
                    response = await http.get(path, headers=bearer(token(user)))
                    assert response.status_code == 404, path
        await sockets[user].close()


async def test_an_oversized_request_body_is_refused(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    body = b'{"customerId":"c","parcelId":"' + b"p" * 70_000 + b'"}'
    response = await http.post(
        "/orders",
        content=body,
        headers={**bearer(token("u")), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"

    async def still_serving() -> bool:
        return (await http.get("/health")).status_code == 200

    await eventually(still_serving, "the service to keep serving")
