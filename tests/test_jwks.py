"""Tokens from an identity provider (operations.auth.jwks with operations.auth.tokens): RS256 and
ES256 keys from a JWKS served over real HTTP on 127.0.0.1, rotated, rate-limited, down and back, and
every algorithm confusion refused. Time, for the key set's age and the refetch interval, is a clock
the tests move by hand: nothing waits on the real one."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import jwt
import pytest

from operations.auth.jwks import LIFESPAN_SECONDS, ProviderKeys
from operations.auth.tokens import TokenVerifier, mint
from operations.errors import TokenError
from operations.metrics import Registry
from tests.identity_provider import (
    AUDIENCE,
    ISSUER,
    IdentityProvider,
    claims,
    hand_signed_hs256,
)
from tests.support import eventually

SECRET = "jwks-test-secret-0123456789abcdef"


class Clock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def verifier_for(
    idp: IdentityProvider,
    secret: str | None = None,
    min_refetch: float = 0.3,
    timeout: float = 2.0,
    role_claim: str = "role",
    clock: Clock | None = None,
) -> TokenVerifier:
    keys = ProviderKeys(
        idp.url,
        Registry(),
        min_refetch_seconds=min_refetch,
        fetch_timeout_seconds=timeout,
        clock=clock or Clock(),
    )
    return TokenVerifier(secret, ISSUER, AUDIENCE, role_claim, keys)


def failures(verifier: TokenVerifier) -> float:
    assert verifier.provider is not None
    return verifier.provider.metrics.jwks_fetch_failures.value()


async def refused(verifier: TokenVerifier, token: object) -> TokenError:
    with pytest.raises(TokenError) as caught:
        await verifier.verify(token)
    return caught.value


async def test_rs256_and_es256_tokens_verify_by_kid(idp: IdentityProvider) -> None:
    verifier = verifier_for(idp)
    rsa = await verifier.verify(idp.sign(claims("alice", role="admin"), "rsa-1"))
    ec = await verifier.verify(idp.sign(claims("bob"), "ec-1"))
    assert (rsa.principal.user_id, rsa.principal.is_admin) == ("alice", True)
    assert (ec.principal.user_id, ec.principal.is_admin) == ("bob", False)
    assert idp.fetches == 1, "the key set is fetched once and cached"
    for _ in range(20):
        await verifier.verify(idp.sign(claims("alice"), "ec-1"))
    assert idp.fetches == 1


async def test_a_rotated_key_is_fetched_once_for_many_tokens(idp: IdentityProvider) -> None:
    clock = Clock()
    verifier = verifier_for(idp, min_refetch=0.3, clock=clock)
    await verifier.verify(idp.sign(claims(), "rsa-1"))
    assert idp.fetches == 1
    idp.add_key("rsa-2", "RSA")
    clock.advance(0.35)
    tokens = [idp.sign(claims(f"user-{n}"), "rsa-2") for n in range(25)]
    verified = await asyncio.gather(*(verifier.verify(token) for token in tokens))
    assert [v.principal.user_id for v in verified] == [f"user-{n}" for n in range(25)]
    assert idp.fetches == 2, "one fetch for every verification that needed the new key"
    idp.published.remove("rsa-1")  # the old key retired: the set is read again when stale
    await verifier.verify(idp.sign(claims(), "rsa-1"))  # still cached until the set is refetched
    assert idp.fetches == 2
    clock.advance(LIFESPAN_SECONDS + 1)  # the set is stale: read again, without the retired key
    error = await refused(verifier, idp.sign(claims(), "rsa-1"))
    assert "rsa-1" in error.reason
    assert idp.fetches == 3


async def test_unknown_kids_refetch_at_most_once_per_interval(idp: IdentityProvider) -> None:
    clock = Clock()
    verifier = verifier_for(idp, min_refetch=1.0, clock=clock)
    await verifier.verify(idp.sign(claims(), "rsa-1"))
    idp.add_key("stranger", "RSA", publish=False)
    for n in range(30):
        error = await refused(verifier, idp.sign(claims(f"u{n}"), "stranger"))
        assert "stranger" in error.reason
        clock.advance(0.03)  # 0.9 s in all: still inside the interval
    assert idp.fetches == 1, "a flood of unknown kids inside the interval fetches nothing"
    clock.advance(0.2)
    await refused(verifier, idp.sign(claims(), "stranger"))
    await refused(verifier, idp.sign(claims(), "stranger"))
    assert idp.fetches == 2, "after the interval, one fetch"
    idp.published.append("stranger")
    clock.advance(1.1)
    assert (await verifier.verify(idp.sign(claims("late"), "stranger"))).principal.user_id == "late"
    assert idp.fetches == 3


async def test_a_jwks_that_is_down_refuses_logs_counts_and_recovers(
    idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    token = idp.sign(claims("alice"), "rsa-1")
    idp.stop()  # connections refused
    clock = Clock()
    verifier = verifier_for(idp, min_refetch=0.3, clock=clock)
    with caplog.at_level(logging.WARNING, logger="operations.auth.jwks"):
        error = await refused(verifier, token)
    assert "could not be fetched" in error.reason
    assert failures(verifier) == 1
    warnings = [r for r in caplog.records if r.name == "operations.auth.jwks"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert idp.url in warnings[0].getMessage()
    await refused(verifier, token)
    assert failures(verifier) == 1, "no second fetch inside the interval"
    idp.start()  # back, on the same port
    await refused(verifier, token)
    assert failures(verifier) == 1, "still inside the interval: not fetched again"
    clock.advance(0.35)
    assert (await verifier.verify(token)).principal.user_id == "alice"
    assert failures(verifier) == 1
    assert verifier.provider is not None
    assert verifier.provider.metrics.jwks_fetches.value() == 1


async def test_a_jwks_answering_503_or_garbage_refuses_and_counts(idp: IdentityProvider) -> None:
    clock = Clock()
    verifier = verifier_for(idp, min_refetch=0.2, clock=clock)
    idp.mode = "503"
    await refused(verifier, idp.sign(claims(), "rsa-1"))
    assert failures(verifier) == 1
    idp.mode = "up"
    idp.published = []  # a key set without keys
    clock.advance(0.25)
    await refused(verifier, idp.sign(claims(), "rsa-1"))
    assert failures(verifier) == 2
    idp.published = ["rsa-1"]
    clock.advance(0.25)
    assert (await verifier.verify(idp.sign(claims("ok"), "rsa-1"))).principal.user_id == "ok"


async def test_a_hanging_jwks_never_blocks_the_event_loop(idp: IdentityProvider) -> None:
    """The fetch runs in a thread and gives up after its timeout; the loop keeps ticking."""
    idp.mode = "hang"
    verifier = verifier_for(idp, timeout=1.0)
    ticks = 0
    gaps: list[float] = []

    async def tick() -> None:
        nonlocal ticks
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    results = await asyncio.gather(
        *(verifier.verify(idp.sign(claims(f"u{n}"), "rsa-1")) for n in range(10)),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started
    ticker.cancel()
    idp.released.set()
    assert all(isinstance(result, TokenError) for result in results)
    assert 0.9 < elapsed < 3.5, elapsed
    assert ticks > 30 and max(gaps) < 0.5, (ticks, max(gaps))
    assert failures(verifier) == 1, "ten waiting verifications, one fetch"


async def test_known_keys_stay_in_use_while_the_jwks_is_down(idp: IdentityProvider) -> None:
    clock = Clock()
    verifier = verifier_for(idp, min_refetch=0.1, clock=clock)
    assert verifier.provider is not None
    verifier.provider.lifespan_seconds = 0.2
    await verifier.verify(idp.sign(claims(), "rsa-1"))
    idp.mode = "503"
    clock.advance(0.25)  # the set is stale: a fetch is due, and fails
    assert (await verifier.verify(idp.sign(claims("kept"), "rsa-1"))).principal.user_id == "kept"
    assert failures(verifier) == 1
    idp.add_key("rsa-new", "RSA")
    clock.advance(0.15)
    await refused(verifier, idp.sign(claims(), "rsa-new"))
    assert failures(verifier) == 2, "the one fetch due failed: the new key stays unknown"


# --- algorithm confusion ------------------------------------------------------------------------


async def test_hs256_keyed_with_the_providers_public_key_is_refused(idp: IdentityProvider) -> None:
    """The classic confusion: the public key, public by definition, used as an HMAC secret."""
    with_secret = verifier_for(idp, secret=SECRET)
    without_secret = verifier_for(idp, secret=None)
    for kid in ("rsa-1", "ec-1"):
        for key in (
            idp.public_pem(kid),
            json.dumps(idp.public_jwk(kid)).encode(),
            json.dumps(idp.jwks()).encode(),
        ):
            token = hand_signed_hs256(claims("mallory", role="admin"), key, kid=kid)
            error = await refused(without_secret, token)
            assert "'HS256' is not accepted" in error.reason
            error = await refused(with_secret, token)
            assert "Signature verification failed" in error.reason
    good = mint(SECRET, "alice", issuer=ISSUER, audience=AUDIENCE)
    assert (await with_secret.verify(good)).principal.user_id == "alice"
    await refused(without_secret, good)


async def test_a_token_alg_must_match_its_keys_type(idp: IdentityProvider) -> None:
    verifier = verifier_for(idp)
    ec_key = idp.keys["ec-1"]
    rsa_key = idp.keys["rsa-1"]
    # An ES256 token naming the RSA key's kid, and an RS256 one naming the EC key's.
    es_on_rsa = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    rs_on_ec = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    for token in (es_on_rsa, rs_on_ec):
        assert "does not match" in (await refused(verifier, token)).reason
    ps256 = jwt.encode(claims(), rsa_key, algorithm="PS256", headers={"kid": "rsa-1"})
    assert "not accepted" in (await refused(verifier, ps256)).reason


def bad_token(idp: IdentityProvider, kind: str) -> str:
    now = int(time.time())
    stranger = IdentityProvider()
    stranger.add_key("rsa-1", "RSA")
    tokens = {
        "no kid": lambda: jwt.encode(claims(), idp.keys["rsa-1"], algorithm="RS256"),
        "no exp": lambda: idp.sign({k: v for k, v in claims().items() if k != "exp"}, "rsa-1"),
        "expired": lambda: idp.sign(claims(ttl=-5), "rsa-1"),
        "future nbf": lambda: idp.sign(claims(nbf=now + 60), "ec-1"),
        "string nbf": lambda: idp.sign(claims(nbf="9999999999"), "ec-1"),
        "string iat": lambda: idp.sign(claims(iat=str(now)), "rsa-1"),
        "wrong issuer": lambda: idp.sign(claims(iss="https://elsewhere.example"), "rsa-1"),
        "wrong audience": lambda: idp.sign(claims(aud="account"), "rsa-1"),
        "alg none": lambda: jwt.encode(claims(), "", algorithm="none", headers={"kid": "rsa-1"}),
        "signed by another key": lambda: stranger.sign(claims(), "rsa-1"),
        "padded signature": lambda: idp.sign(claims(), "ec-1") + "=",
    }
    return tokens[kind]()


BAD_KINDS = [
    "no kid",
    "no exp",
    "expired",
    "future nbf",
    "string nbf",
    "string iat",
    "wrong issuer",
    "wrong audience",
    "alg none",
    "signed by another key",
    "padded signature",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_provider_tokens_are_held_to_every_rule(idp: IdentityProvider, kind: str) -> None:
    verifier = verifier_for(idp)
    await refused(verifier, bad_token(idp, kind))
    assert (await verifier.verify(idp.sign(claims("fine"), "rsa-1"))).principal.user_id == "fine"


@pytest.mark.parametrize(
    ("path", "extra", "admin"),
    [
        ("realm_access.roles", {"realm_access": {"roles": ["offline_access", "admin"]}}, True),
        ("realm_access.roles", {"realm_access": {"roles": ["offline_access"]}}, False),
        (
            "resource_access.operations.roles",
            {"resource_access": {"operations": {"roles": "admin"}}},
            True,
        ),
        ("role", {"realm_access": {"roles": ["admin"]}}, False),
        ("cognito:groups", {"cognito:groups": ["Admin"]}, True),
    ],
)
async def test_roles_come_from_the_configured_claim_path(
    idp: IdentityProvider, path: str, extra: dict[str, object], admin: bool
) -> None:
    verifier = verifier_for(idp, role_claim=path)
    verified = await verifier.verify(idp.sign({**claims("alice"), **extra}, "rsa-1"))
    assert verified.principal.is_admin is admin


def fetches_in_flight() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "operations-jwks-fetch"]


async def test_stopping_cancels_the_fetch_in_flight_and_starts_none_after(
    idp: IdentityProvider,
) -> None:
    """A verification waiting on a hanging JWKS is refused at stop, not left pending, and the
    fetch's task has ended; a later verification is refused without a fetch."""
    idp.mode = "hang"
    verifier = verifier_for(idp, timeout=20.0)
    assert verifier.provider is not None
    waiting = asyncio.create_task(verifier.verify(idp.sign(claims(), "rsa-1")))

    async def in_flight() -> bool:
        return len(fetches_in_flight()) == 1

    await eventually(in_flight, "the fetch to start")
    started = time.monotonic()
    await verifier.provider.stop()
    assert time.monotonic() - started < 2.0
    assert fetches_in_flight() == []
    with pytest.raises(TokenError):
        await asyncio.wait_for(waiting, 2.0)
    await refused(verifier, idp.sign(claims(), "ec-1"))
    assert fetches_in_flight() == []
    assert failures(verifier) == 0  # cancelled, not failed
    idp.released.set()
