"""Unit tests for operations.auth.tokens with HS256 (the identity provider's keys are in
test_identity_provider.py) and for operations.auth.identity.Principal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest

from operations.auth import tokens
from operations.auth.identity import Principal
from operations.auth.tokens import MAX_TOKEN_LENGTH, TokenVerifier, mint, roles_at
from operations.errors import OperationsError, TokenError

SECRET = "unit-test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-0123456789abcdefgh"
USER = uuid.UUID("3f2504e0-4f89-41d3-9a0c-0305e82c3301")
USER_D = str(USER)
VERIFIER = TokenVerifier(SECRET)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def signed(header: bytes, payload: bytes, secret: str = SECRET) -> str:
    """A compact JWS signed with HS256 by hand, independent of PyJWT and of the module."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def now() -> int:
    return int(time.time())


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": USER.hex, "iat": now(), "exp": now() + 600}
    base.update(extra)
    return {key: value for key, value in base.items() if value is not None}


def encode(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def hand(payload: dict[str, Any], secret: str = SECRET) -> str:
    return signed(b'{"alg":"HS256","typ":"JWT"}', json.dumps(payload).encode(), secret)


async def refused(token: object, verifier: TokenVerifier = VERIFIER) -> TokenError:
    with pytest.raises(TokenError) as caught:
        await verifier.verify(token)
    assert caught.value.code == "unauthorized"
    assert isinstance(caught.value, OperationsError)
    return caught.value


# --- good tokens ---------------------------------------------------------------------------------


async def test_good_token_gives_the_normalised_principal() -> None:
    payload = claims()
    verified = await VERIFIER.verify(encode(payload))
    assert verified.principal == Principal(USER_D, frozenset())
    assert verified.principal.is_admin is False
    assert verified.expires_at == payload["exp"]
    assert verified.claims["sub"] == USER.hex


async def test_a_hand_signed_standard_hs256_token_verifies() -> None:
    assert (await VERIFIER.verify(hand(claims()))).principal.user_id == USER_D


@pytest.mark.parametrize(
    "subject",
    [USER.hex, USER.hex.upper(), str(USER), str(USER).upper(), "{" + str(USER) + "}"],
)
async def test_sub_in_any_guid_format_gives_the_same_user(subject: str) -> None:
    verified = await VERIFIER.verify(encode(claims(sub=subject)))
    assert verified.principal.user_id == USER_D


async def test_sub_that_is_not_a_guid_is_kept_trimmed() -> None:
    assert (await VERIFIER.verify(encode(claims(sub="  alice ")))).principal.user_id == "alice"


@pytest.mark.parametrize(
    ("role_claims", "roles"),
    [
        pytest.param({"role": "admin"}, {"admin"}, id="role-str"),
        pytest.param({"role": "Admin"}, {"admin"}, id="role-str-case"),
        pytest.param({"role": ["User", "ADMIN"]}, {"user", "admin"}, id="role-list"),
        pytest.param({"role": ["user", 7, None, {"x": 1}]}, {"user"}, id="non-strings-ignored"),
        pytest.param({"role": 1}, set(), id="role-number"),
        pytest.param({"roles": ["admin"]}, set(), id="other-claims-are-not-read"),
        pytest.param({}, set(), id="none"),
    ],
)
async def test_roles_are_read_from_the_role_claim_and_case_folded(
    role_claims: dict[str, Any], roles: set[str]
) -> None:
    verified = await VERIFIER.verify(encode(claims() | role_claims))
    assert verified.principal.roles == frozenset(roles)
    assert verified.principal.is_admin is ("admin" in roles)


MS_ROLE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


@pytest.mark.parametrize(
    ("path", "token_claims", "roles"),
    [
        pytest.param("realm_access.roles", {"realm_access": {"roles": ["admin"]}}, {"admin"}),
        pytest.param("realm_access.roles", {"realm_access": {"roles": "Admin"}}, {"admin"}),
        pytest.param("realm_access.roles", {"realm_access": ["admin"]}, set(), id="not-an-object"),
        pytest.param("realm_access.roles", {"realm_access": {}}, set(), id="missing-leaf"),
        pytest.param("realm_access.roles", {"roles": ["admin"]}, set(), id="missing-branch"),
        pytest.param(
            "resource_access.operations.roles",
            {"resource_access": {"operations": {"roles": ["ops", "admin"]}}},
            {"ops", "admin"},
            id="three-deep",
        ),
        pytest.param("groups", {"groups": ["admin", "staff"]}, {"admin", "staff"}),
        pytest.param(MS_ROLE, {MS_ROLE: "Admin"}, {"admin"}, id="a-uri-claim-name"),
        pytest.param("a.b", {"a.b": "admin", "a": {"b": "user"}}, {"admin"}, id="literal-first"),
    ],
)
async def test_the_role_claim_is_a_dotted_path(
    path: str, token_claims: dict[str, Any], roles: set[str]
) -> None:
    assert roles_at(token_claims, path) == frozenset(roles)
    verifier = TokenVerifier(SECRET, role_claim=path)
    verified = await verifier.verify(encode(claims() | token_claims))
    assert verified.principal.roles == frozenset(roles)
    assert verified.principal.is_admin is ("admin" in roles)


async def test_nbf_in_the_past_or_now_is_accepted() -> None:
    for nbf in (now() - 10, now()):
        assert (await VERIFIER.verify(encode(claims(nbf=nbf)))).principal.user_id == USER_D


async def test_exp_as_a_float_is_accepted() -> None:
    exp = time.time() + 60.5
    assert (await VERIFIER.verify(encode(claims(exp=exp)))).expires_at == exp


async def test_leeway_accepts_a_token_just_expired() -> None:
    token = encode(claims(exp=now() - 5))
    await refused(token)
    lenient = TokenVerifier(SECRET, leeway_seconds=30)
    assert (await lenient.verify(token)).principal.user_id == USER_D


# --- refusals ------------------------------------------------------------------------------------


async def test_alg_none_is_refused() -> None:
    token = jwt.encode(claims(role="admin"), "", algorithm="none")
    assert token.endswith(".")
    await refused(token)


async def test_alg_none_with_a_valid_hs256_signature_is_refused() -> None:
    await refused(signed(b'{"alg":"none","typ":"JWT"}', json.dumps(claims()).encode()))


@pytest.mark.parametrize(
    "algorithm", ["HS512", "HS384", "RS256", "ES256", "PS256", "hs256", "", "None", None]
)
async def test_algorithms_not_configured_are_refused(algorithm: str | None) -> None:
    header = json.dumps({"alg": algorithm, "typ": "JWT"}).encode()
    error = await refused(signed(header, json.dumps(claims()).encode()))
    assert "algorithm" in error.reason


async def test_header_without_alg_is_refused() -> None:
    await refused(signed(b'{"typ":"JWT"}', json.dumps(claims()).encode()))


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b'["HS256"]', "not a JSON object"),
        (b'{"alg":"HS256",', "not base64url JSON"),
        (b'{"alg":"HS256","kid":7}', "Key ID header parameter must be a string"),
    ],
)
async def test_a_header_that_is_no_json_object_or_names_no_text_kid_is_refused(
    header: bytes, why: str
) -> None:
    error = await refused(signed(header, json.dumps(claims()).encode()))
    assert why in error.reason


async def test_hs512_signed_token_is_refused() -> None:
    header = b64(b'{"alg":"HS512","typ":"JWT"}')
    payload = b64(json.dumps(claims()).encode())
    digest = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha512).digest()
    await refused(f"{header}.{payload}.{b64(digest)}")


async def test_without_a_secret_hs256_is_refused() -> None:
    error = await refused(encode(claims()), TokenVerifier(None))
    assert "HS256" in error.reason


async def test_wrong_key_is_refused() -> None:
    await refused(encode(claims(), OTHER_SECRET))


async def test_tampered_payload_is_refused() -> None:
    header, _, signature = encode(claims()).split(".")
    forged = b64(json.dumps(claims(role="admin")).encode())
    await refused(f"{header}.{forged}.{signature}")


async def test_empty_signature_is_refused() -> None:
    header, payload, _ = encode(claims()).split(".")
    await refused(f"{header}.{payload}.")


@pytest.mark.parametrize("exp_offset", [0, -1, -3_600])
async def test_expired_is_refused(exp_offset: int) -> None:
    await refused(encode(claims(exp=now() + exp_offset)))


async def test_missing_exp_is_refused() -> None:
    error = await refused(encode({"sub": USER.hex, "iat": now()}))
    assert "exp" in error.reason


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value", ["9999999999", "1", True, False, [1], {"at": 1}], ids=lambda v: repr(v)
)
async def test_non_numeric_time_claims_are_refused(claim: str, value: object) -> None:
    """PyJWT reads a string with int(): "nbf": "1" would pass, "9999999999" too for exp."""
    error = await refused(hand(claims(**{claim: value})))
    assert claim in error.reason


async def test_a_string_nbf_far_in_the_future_is_refused() -> None:
    """The case the hand-written verifier let through."""
    await refused(hand(claims(nbf="9999999999")))


async def test_null_time_claims_are_refused() -> None:
    for claim in ("nbf", "iat"):
        payload = claims()
        payload[claim] = None
        await refused(hand(payload))


async def test_nbf_in_the_future_is_refused() -> None:
    await refused(encode(claims(nbf=now() + 60)))


async def test_issuer_is_checked_only_when_configured() -> None:
    token = encode(claims(iss="someone"))
    assert (await VERIFIER.verify(token)).principal.user_id == USER_D
    strict = TokenVerifier(SECRET, issuer="pacco")
    await refused(token, strict)
    await refused(encode(claims()), strict)
    await refused(encode(claims(iss="pacc")), strict)
    await refused(hand(claims(iss=["pacco"])), strict)
    assert (await strict.verify(encode(claims(iss="pacco")))).principal.user_id == USER_D


async def test_audience_is_checked_only_when_configured() -> None:
    token = encode(claims(aud="elsewhere"))
    assert (await VERIFIER.verify(token)).principal.user_id == USER_D
    strict = TokenVerifier(SECRET, audience="operations")
    await refused(token, strict)
    await refused(encode(claims()), strict)
    await refused(encode(claims(aud=["a", "b"])), strict)
    await refused(hand(claims(aud=17)), strict)


@pytest.mark.parametrize("aud", ["operations", ["operations"], ["other", "operations"]])
async def test_audience_as_str_or_list(aud: str | list[str]) -> None:
    strict = TokenVerifier(SECRET, audience="operations")
    assert (await strict.verify(encode(claims(aud=aud)))).principal.user_id == USER_D


@pytest.mark.parametrize("sub", [None, "", "   ", 42, ["x"]])
async def test_missing_or_bad_sub_is_refused(sub: object) -> None:
    payload = {"exp": now() + 600, "sub": sub}
    await refused(hand({k: v for k, v in payload.items() if v is not None}))


def garbage_tokens() -> list[Any]:
    good = encode(claims())
    header, payload, signature = good.split(".")
    sig = hmac.new(SECRET.encode(), b"", hashlib.sha256).digest()
    return [
        pytest.param(None, id="none"),
        pytest.param(42, id="a-number"),
        pytest.param({"token": good}, id="an-object"),
        pytest.param("", id="empty"),
        pytest.param("garbage", id="one-part"),
        pytest.param(f"{header}.{payload}", id="two-parts"),
        pytest.param(f"{good}.extra", id="four-parts"),
        pytest.param("a.b.c", id="tiny-parts"),
        pytest.param(f"!!!.{payload}.{signature}", id="header-not-base64"),
        pytest.param(f"{header}.{payload}.é", id="signature-not-ascii"),
        pytest.param(f"x.{payload}.{signature}", id="header-bad-length"),
        pytest.param(f"{b64(b'not json')}.{payload}.{signature}", id="header-not-json"),
        pytest.param(f"{b64(b'[1,2]')}.{payload}.{signature}", id="header-array"),
        pytest.param(f"{b64(bytes([0xFF, 0xFE]))}.{payload}.{signature}", id="header-binary"),
        pytest.param(signed(b'{"alg":"HS256"}', b"not json"), id="payload-not-json"),
        pytest.param(signed(b'{"alg":"HS256"}', b'["sub"]'), id="payload-array"),
        pytest.param(signed(b'{"alg":"HS256"}', b"null"), id="payload-null"),
        pytest.param(signed(b'{"alg":"HS256"}', b"\xff\xfe"), id="payload-binary"),
        pytest.param(f"{b64(b'{}')}..{b64(sig)}", id="no-alg-empty-payload"),
        pytest.param(good + "A" * MAX_TOKEN_LENGTH, id="too-long"),
    ]


@pytest.mark.parametrize("token", garbage_tokens())
async def test_garbage_is_refused_with_token_error(token: object) -> None:
    await refused(token)


def other_spellings(segment: str) -> list[str]:
    """The other base64url spellings of the same bytes: the unused low bits of the last
    character set differently. A 32-byte HMAC leaves two such bits, so three other spellings."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}[len(segment) % 4]
    last = alphabet.index(segment[-1])
    spellings = [
        segment[:-1] + alphabet[(last & ~((1 << unused) - 1)) | low] for low in range(1 << unused)
    ]
    return [spelling for spelling in spellings if spelling != segment]


async def test_every_other_spelling_of_a_valid_signature_is_refused() -> None:
    token = encode(claims())
    header, payload, signature = token.split(".")
    spellings = other_spellings(signature)
    assert len(spellings) == 3
    for spelling in spellings:
        assert unb64(spelling) == unb64(signature), "the same signature bytes"
        error = await refused(f"{header}.{payload}.{spelling}")
        assert "canonical" in error.reason
    assert (await VERIFIER.verify(token)).principal.user_id == USER_D


def non_canonical_signatures() -> list[Any]:
    for n in range(100):
        header, payload, signature = encode(claims(jti=str(n))).split(".")
        if "-" in signature or "_" in signature:
            break
    standard = signature.replace("-", "+").replace("_", "/")
    return [
        pytest.param(f"{header}.{payload}.{signature}!!!!", id="junk-appended"),
        pytest.param(f"{header}.{payload}.{signature}=", id="padded"),
        pytest.param(f"{header}.{payload}.{standard}", id="standard-alphabet"),
        pytest.param(f"{header}=.{payload}.{signature}", id="padded-header"),
        pytest.param(f"{header}.{payload} .{signature}", id="space-in-payload"),
    ]


@pytest.mark.parametrize("token", non_canonical_signatures())
async def test_segments_that_are_not_strict_base64url_are_refused(token: str) -> None:
    """RFC 7515: each segment is unpadded base64url; any other spelling is not the token."""
    await refused(token)


# --- mint ----------------------------------------------------------------------------------------


def minted_claims(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(unb64(token.split(".")[1]))
    return result


async def test_mint_writes_sub_iat_and_exp() -> None:
    issued = now()
    token = mint(SECRET, USER.hex, ttl_seconds=120, now=issued)
    assert minted_claims(token) == {"sub": USER.hex, "iat": issued, "exp": issued + 120}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    verified = await VERIFIER.verify(token)
    assert verified.principal == Principal(USER_D, frozenset())
    await refused(mint(SECRET, USER.hex, ttl_seconds=120, now=issued - 120))


async def test_mint_signs_as_the_standard_says() -> None:
    """Pinned against a signature computed here with hmac, independently of PyJWT."""
    token = mint(SECRET, "u", now=1_700_000_000)
    header, payload, signature = token.split(".")
    expected = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert unb64(signature) == expected
    assert "=" not in token


async def test_mint_one_role_is_a_string_and_several_are_a_list() -> None:
    assert minted_claims(mint(SECRET, "u", roles=("admin",)))["role"] == "admin"
    several = minted_claims(mint(SECRET, "u", roles=("admin", "ops")))
    assert several["role"] == ["admin", "ops"]
    admin = await VERIFIER.verify(mint(SECRET, "u", roles=("Admin", "ops")))
    assert admin.principal.is_admin
    assert admin.principal.roles == frozenset({"admin", "ops"})


async def test_mint_with_issuer_and_audience_passes_a_strict_verifier() -> None:
    token = mint(SECRET, USER.hex, issuer="pacco", audience="operations")
    written = minted_claims(token)
    assert written["iss"] == "pacco"
    assert written["aud"] == "operations"
    strict = TokenVerifier(SECRET, issuer="pacco", audience="operations")
    assert (await strict.verify(token)).principal.user_id == USER_D
    await refused(mint(SECRET, USER.hex, issuer="pacco"), strict)


async def test_mint_without_roles_issuer_or_audience_omits_them() -> None:
    assert set(minted_claims(mint(SECRET, "u"))) == {"sub", "iat", "exp"}


async def test_mint_adds_extra_claims_shaped_like_a_provider() -> None:
    extra = {"realm_access": {"roles": ["admin"]}, "azp": "pacco-web"}
    token = mint(SECRET, "u", extra=extra)
    assert minted_claims(token)["realm_access"] == {"roles": ["admin"]}
    keycloak_like = TokenVerifier(SECRET, role_claim="realm_access.roles")
    assert (await keycloak_like.verify(token)).principal.is_admin
    assert not (await VERIFIER.verify(token)).principal.is_admin


# --- Principal.may_read ---------------------------------------------------------------------------


def test_owner_may_read() -> None:
    assert Principal(USER_D, frozenset()).may_read(USER_D)


def test_other_user_may_not_read() -> None:
    assert not Principal(USER_D, frozenset({"user"})).may_read(str(uuid.uuid4()))


def test_admin_may_read_anything() -> None:
    admin = Principal("ops", frozenset({"admin"}))
    assert admin.is_admin
    assert admin.may_read(USER_D)
    assert admin.may_read("")


def test_empty_owner_is_readable_only_by_an_admin() -> None:
    assert not Principal("", frozenset()).may_read("")
    assert not Principal(USER_D, frozenset()).may_read("")
    assert Principal("", frozenset({"admin"})).may_read("")


def test_role_names_are_case_sensitive_in_principal() -> None:
    assert not Principal("u", frozenset({"Admin"})).is_admin


async def test_a_token_verified_lately_is_not_decoded_again() -> None:
    verifier = TokenVerifier(SECRET)
    token = mint(SECRET, "alice", ("admin",))
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    assert first.principal == Principal("alice", frozenset({"admin"}))


async def test_a_kept_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(SECRET)
    token = mint(SECRET, "alice", ttl_seconds=2, now=time.time() - 1)  # 1 s left
    await verifier.verify(token)
    await asyncio.sleep(1.2)
    with pytest.raises(TokenError, match="expired"):
        await verifier.verify(token)
    assert verifier.kept == 0


async def test_a_refused_token_is_not_kept() -> None:
    verifier = TokenVerifier(SECRET)
    with pytest.raises(TokenError):
        await verifier.verify(mint(OTHER_SECRET, "mallory"))
    assert verifier.kept == 0


async def test_the_tokens_kept_are_bounded_the_one_used_longest_ago_dropped_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "MAX_VERIFIED", 3)
    verifier = TokenVerifier(SECRET)
    a, b, c, d = (mint(SECRET, user) for user in ("a", "b", "c", "d"))
    kept_a = await verifier.verify(a)
    first_b = await verifier.verify(b)
    await verifier.verify(c)
    assert await verifier.verify(a) is kept_a  # used again: now the newest
    await verifier.verify(d)  # b, used longest ago, goes
    assert verifier.kept == 3
    assert await verifier.verify(a) is kept_a
    kept_b = await verifier.verify(b)  # verified anew (c goes), then kept
    assert kept_b is not first_b and kept_b == first_b
    assert await verifier.verify(b) is kept_b and verifier.kept == 3
