"""The running service with tokens from an identity provider (contract §10): RS256 and ES256 tokens
from a JWKS served over real HTTP are accepted on HTTP and Socket.IO; every refused kind of token
is refused on HTTP, on Socket.IO connect and on ``initialize``; a JWKS that is down means 401, a
WARNING and a metric, and the service recovers when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
import socketio

from operations.auth.identity import normalise_id
from operations.auth.tokens import mint
from operations.settings import Settings
from tests.api import bearer, recorded
from tests.conftest import SECRET
from tests.hub_support import live_clients
from tests.identity_provider import (
    AUDIENCE,
    ISSUER,
    IdentityProvider,
    b64,
    claims,
    hand_signed_hs256,
)
from tests.live import LiveClient
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, eventually, start_service, uid

ROLE_CLAIM = "realm_access.roles"


def keycloak_claims(user: str, *roles: str, ttl: int = 600, **extra: Any) -> dict[str, Any]:
    return claims(user, ttl, realm_access={"roles": ["offline_access", *roles]}, **extra)


def provider_settings(settings: Settings, idp: IdentityProvider, secret: str | None) -> Settings:
    return replace(
        settings,
        jwt_secret=secret,
        jwt_jwks_url=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_role_claim=ROLE_CLAIM,
    )


@contextlib.asynccontextmanager
async def provider_service(
    settings: Settings, idp: IdentityProvider, secret: str | None = SECRET
) -> AsyncIterator[tuple[RunningService, httpx.AsyncClient, Callable[[], LiveClient]]]:
    """The service trusting ``idp``, an HTTP client of it, and a maker of its live clients."""
    async with (
        start_service(provider_settings(settings, idp, secret)) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
        live_clients(running.url) as clients,
    ):
        yield running, http, clients


async def created(http: httpx.AsyncClient, op: str, token: str) -> dict[str, Any]:
    record: dict[str, Any] = (await recorded(http, op, bearer(token))).json()
    return record


def refused_tokens(idp: IdentityProvider, user: str) -> dict[str, str]:
    """Every kind of token the service must refuse, each otherwise fit to read ``user``'s
    operations."""
    now = int(time.time())
    good = keycloak_claims(user)
    header, payload, signature = idp.sign(good, "rsa-1").split(".")
    without_exp = {key: value for key, value in good.items() if key != "exp"}
    ps256 = jwt.encode(good, idp.keys["rsa-1"], algorithm="PS256", headers={"kid": "rsa-1"})
    return {
        "alg none": jwt.encode(good, "", algorithm="none", headers={"kid": "rsa-1"}),
        "alg not configured (PS256)": ps256,
        "alg not configured (HS512)": _hs512(good),
        "no exp": idp.sign(without_exp, "rsa-1"),
        "string nbf": idp.sign({**good, "nbf": "9999999999"}, "rsa-1"),
        "string iat": idp.sign({**good, "iat": str(now)}, "ec-1"),
        "future nbf": idp.sign({**good, "nbf": now + 120}, "ec-1"),
        "non-canonical signature": f"{header}.{payload}.{_respelled(signature)}",
        "padded signature": f"{header}.{payload}.{signature}=",
        "wrong issuer": idp.sign({**good, "iss": "https://elsewhere.example"}, "rsa-1"),
        "wrong audience": idp.sign({**good, "aud": "account"}, "ec-1"),
        "expired": idp.sign(keycloak_claims(user, ttl=-5), "rsa-1"),
        "HS256 keyed with the public key": hand_signed_hs256(good, idp.public_pem("rsa-1")),
        "HS256 keyed with the JWK": hand_signed_hs256(
            good, json.dumps(idp.public_jwk("rsa-1")).encode(), kid="rsa-1"
        ),
        "unknown kid": jwt.encode(good, idp.keys["rsa-1"], algorithm="RS256", headers={"kid": "x"}),
        "HS256 without iss and aud": mint(SECRET, user),
    }


def _hs512(payload: dict[str, Any]) -> str:
    head = b64(b'{"alg":"HS512","typ":"JWT"}')
    body = b64(json.dumps(payload).encode())
    digest = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha512).digest()
    return f"{head}.{body}.{b64(digest)}"


def _respelled(signature: str) -> str:
    """The same signature bytes with the unused trailing bits of the last character set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(signature) % 4 in (2, 3)
    last = alphabet.index(signature[-1])
    return signature[:-1] + alphabet[last ^ 1]


# --- accepted ----------------------------------------------------------------------------------


async def test_provider_tokens_read_operations_and_join_the_live_push(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    publisher: Publisher,
    idp: IdentityProvider,
) -> None:
    user, other, op = uid(), uid(), uid()
    async with provider_service(settings, idp) as (_, http, clients):
        rs256 = idp.sign(keycloak_claims(user), "rsa-1")
        es256 = idp.sign(keycloak_claims(user), "ec-1")
        admin = idp.sign(keycloak_claims("ops", "admin"), "ec-1")
        live, ops = clients(), clients()
        await live.connect({"token": rs256})
        await ops.connect({"token": admin})
        await publisher.publish("create_order", op, user=user)
        record = await created(http, op, rs256)
        assert record["userId"] == normalise_id(user) and record["state"] == "pending"
        assert (await http.get(f"/operations/{op}", headers=bearer(es256))).status_code == 200
        assert (await http.get(f"/operations/{op}", headers=bearer(admin))).status_code == 200
        stranger = idp.sign(keycloak_claims(other), "rsa-1")
        assert (await http.get(f"/operations/{op}", headers=bearer(stranger))).status_code == 404
        await live.wait_for_state(op, "pending")
        await ops.wait_for_state(op, "pending")  # realm_access.roles holds admin
        assert idp.fetches == 1
        # HS256 with the configured secret still works beside the provider.
        hs256 = mint(SECRET, user, issuer=ISSUER, audience=AUDIENCE)
        assert (await http.get(f"/operations/{op}", headers=bearer(hs256))).status_code == 200


async def test_a_provider_token_is_disconnected_when_it_expires(
    settings: Settings, redis_client: aioredis.Redis, amqp: object, idp: IdentityProvider
) -> None:
    async with provider_service(settings, idp) as (_, _, clients):
        live = clients()
        expires = int(time.time()) + 3
        token = idp.sign(keycloak_claims(uid(), ttl=3), "ec-1")
        await live.connect({"token": token})
        await asyncio.wait_for(live.disconnected.wait(), timeout=10)
        assert expires - 0.1 <= time.time() < expires + 2
        assert live.events("disconnected") == [{"code": "token_expired"}]


async def test_with_a_jwks_and_no_secret_hs256_is_refused(
    settings: Settings, redis_client: aioredis.Redis, amqp: object, idp: IdentityProvider
) -> None:
    async with provider_service(settings, idp, secret=None) as (_, http, clients):
        user = uid()
        hs256 = mint(SECRET, user, issuer=ISSUER, audience=AUDIENCE, extra=keycloak_claims(user))
        response = await http.get("/operations", headers=bearer(hs256))
        assert response.status_code == 401
        assert "HS256" in response.json()["reason"]
        live = clients()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await live.connect({"token": hs256})
        rs256 = idp.sign(keycloak_claims(user), "rsa-1")
        assert (await http.get("/operations", headers=bearer(rs256))).status_code == 200


# --- refused, on each of the three doors ------------------------------------------------------


async def test_every_refused_kind_gets_401_over_http(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    publisher: Publisher,
    idp: IdentityProvider,
) -> None:
    user, op = uid(), uid()
    async with provider_service(settings, idp, secret=SECRET) as (_, http, _):
        await publisher.publish("create_order", op, user=user)
        await created(http, op, idp.sign(keycloak_claims(user), "rsa-1"))
        for kind, token in refused_tokens(idp, user).items():
            response = await http.get(f"/operations/{op}", headers=bearer(token))
            assert response.status_code == 401, kind
            assert response.json()["code"] == "unauthorized", kind


async def test_every_refused_kind_is_refused_on_connect(
    settings: Settings, redis_client: aioredis.Redis, amqp: object, idp: IdentityProvider
) -> None:
    async with provider_service(settings, idp) as (_, _, clients):
        for kind, token in refused_tokens(idp, uid()).items():
            live = clients()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await live.connect({"token": token})
            assert live.connect_error == {
                "message": "unauthorized",
                "data": {"code": "unauthorized"},
            }, kind


async def test_every_refused_kind_is_refused_on_initialize(
    settings: Settings, redis_client: aioredis.Redis, amqp: object, idp: IdentityProvider
) -> None:
    async with provider_service(settings, idp) as (_, _, clients):
        user = uid()
        for kind, token in refused_tokens(idp, user).items():
            live = clients()
            await live.connect()
            await live.client.emit("initialize", {"token": token})
            await asyncio.wait_for(live.disconnected.wait(), timeout=10)
            assert live.received == [("disconnected", {"code": "unauthorized"})], kind
        accepted = clients()
        await accepted.connect()
        await accepted.client.emit("initialize", idp.sign(keycloak_claims(user), "rsa-1"))
        await accepted.wait_for(lambda c: bool(c.events("connected")), "connected")
        assert accepted.events("connected") == [{"userId": normalise_id(user)}]


# --- the identity provider down ----------------------------------------------------------------


async def metric(http: httpx.AsyncClient, name: str) -> float:
    return Scrape((await http.get("/metrics")).text).value(name) or 0.0


async def test_a_jwks_that_is_down_means_401_a_warning_and_a_metric_then_recovery(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    idp: IdentityProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    idp.stop()
    user = uid()
    token = idp.sign(keycloak_claims(user), "rsa-1")
    caplog.set_level(logging.WARNING, logger="operations.auth.jwks")
    async with provider_service(settings, idp) as (running, http, clients):
        provider = running.service.verifier.provider
        assert provider is not None
        provider.min_refetch_seconds = 0.5
        started = time.monotonic()
        for path in ("/operations", f"/operations/{uid()}", "/sagas"):
            response = await http.get(path, headers=bearer(token))
            assert response.status_code == 401, path
            assert "could not be fetched" in response.json()["reason"]
        assert time.monotonic() - started < 5, "refused promptly, not after retries"
        live = clients()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await live.connect({"token": token})
        assert (await http.get("/health")).status_code == 200
        warnings = [r for r in caplog.records if r.name == "operations.auth.jwks"]
        assert warnings and all(r.levelno == logging.WARNING for r in warnings)
        assert idp.url in warnings[0].getMessage()
        assert await metric(http, "operations_jwks_fetch_failures_total") == len(warnings)

        idp.start()

        async def accepted() -> bool:
            response = await http.get("/operations", headers=bearer(token))
            return response.status_code == 200

        await eventually(accepted, "the service to accept the token once the JWKS is back")
        assert await metric(http, "operations_jwks_fetches_total") == 1
        live = clients()
        await live.connect({"token": token})
        assert live.client.connected


async def test_the_metrics_page_shows_the_jwks_counters(
    service: RunningService, http: httpx.AsyncClient
) -> None:
    page = Scrape((await http.get("/metrics")).text)
    assert page.types["operations_jwks_fetch_failures"] == "counter"
    assert page.types["operations_jwks_fetches"] == "counter"
