"""Unit tests for operations.tokens (HS256 JWTs) and operations.identity.Principal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import pytest

from operations.errors import OperationsError, TokenError
from operations.identity import Principal
from operations.tokens import MAX_TOKEN_LENGTH, TokenVerifier, encode, mint

SECRET = "unit-test-secret-0123456789abcdef"
NOW = 1_700_000_000.0
USER = uuid.UUID("3f2504e0-4f89-41d3-9a0c-0305e82c3301")
USER_D = str(USER)
VERIFIER = TokenVerifier(SECRET)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def signed(header: bytes, payload: bytes, secret: str = SECRET) -> str:
    """A compact JWS signed with HS256 by hand, independent of the module under test."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": USER.hex, "iat": int(NOW), "exp": int(NOW) + 600}
    base.update(extra)
    return {key: value for key, value in base.items() if value is not None}


def refused(token: str, verifier: TokenVerifier = VERIFIER, now: float = NOW) -> TokenError:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token, now=now)
    assert caught.value.code == "unauthorized"
    assert isinstance(caught.value, OperationsError)
    return caught.value


# --- good tokens ---------------------------------------------------------------------------------


def test_good_token_gives_the_normalised_principal() -> None:
    verified = VERIFIER.verify(encode(claims(), SECRET), now=NOW)
    assert verified.principal == Principal(USER_D, frozenset())
    assert verified.principal.is_admin is False
    assert verified.expires_at == NOW + 600
    assert verified.claims["sub"] == USER.hex


def test_a_hand_signed_standard_hs256_token_verifies() -> None:
    token = signed(b'{"alg":"HS256","typ":"JWT"}', json.dumps(claims()).encode())
    assert VERIFIER.verify(token, now=NOW).principal.user_id == USER_D


def test_encode_produces_a_standard_hs256_signature() -> None:
    token = encode(claims(), SECRET)
    header, payload, signature = token.split(".")
    assert json.loads(unb64(header)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(unb64(payload)) == claims()
    expected = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert unb64(signature) == expected
    assert "=" not in token


@pytest.mark.parametrize(
    "subject",
    [USER.hex, USER.hex.upper(), str(USER), str(USER).upper(), "{" + str(USER) + "}"],
)
def test_sub_in_any_guid_format_gives_the_same_user(subject: str) -> None:
    verified = VERIFIER.verify(encode(claims(sub=subject), SECRET), now=NOW)
    assert verified.principal.user_id == USER_D


def test_sub_that_is_not_a_guid_is_kept_trimmed() -> None:
    verified = VERIFIER.verify(encode(claims(sub="  alice "), SECRET), now=NOW)
    assert verified.principal.user_id == "alice"


@pytest.mark.parametrize(
    ("role_claims", "roles"),
    [
        pytest.param({"role": "admin"}, {"admin"}, id="role-str"),
        pytest.param({"role": "Admin"}, {"admin"}, id="role-str-case"),
        pytest.param({"role": ["User", "ADMIN"]}, {"user", "admin"}, id="role-list"),
        pytest.param({"roles": ["Ops", "user"]}, {"ops", "user"}, id="roles-list"),
        pytest.param({"roles": "user"}, {"user"}, id="roles-str"),
        pytest.param(
            {"http://schemas.microsoft.com/ws/2008/06/identity/claims/role": "Admin"},
            {"admin"},
            id="dotnet-claim",
        ),
        pytest.param({"role": ["user", 7, None, {"x": 1}]}, {"user"}, id="non-strings-ignored"),
        pytest.param({"role": 1}, set(), id="role-number"),
        pytest.param({}, set(), id="none"),
    ],
)
def test_roles_are_read_and_case_folded(role_claims: dict[str, Any], roles: set[str]) -> None:
    verified = VERIFIER.verify(encode(claims() | role_claims, SECRET), now=NOW)
    assert verified.principal.roles == frozenset(roles)
    assert verified.principal.is_admin is ("admin" in roles)


def test_nbf_in_the_past_is_accepted() -> None:
    verified = VERIFIER.verify(encode(claims(nbf=int(NOW) - 10), SECRET), now=NOW)
    assert verified.principal.user_id == USER_D


def test_nbf_equal_to_now_is_accepted() -> None:
    verified = VERIFIER.verify(encode(claims(nbf=int(NOW)), SECRET), now=NOW)
    assert verified.principal.user_id == USER_D


def test_exp_as_a_float_is_accepted() -> None:
    verified = VERIFIER.verify(encode(claims(exp=NOW + 0.5), SECRET), now=NOW)
    assert verified.expires_at == NOW + 0.5


def test_leeway_accepts_a_token_just_expired() -> None:
    token = encode(claims(exp=int(NOW) - 5), SECRET)
    refused(token)
    lenient = TokenVerifier(SECRET, leeway_seconds=30)
    assert lenient.verify(token, now=NOW).principal.user_id == USER_D


def test_verify_uses_the_clock_when_now_is_not_given() -> None:
    assert VERIFIER.verify(mint(SECRET, USER.hex)).principal.user_id == USER_D
    refused_token = mint(SECRET, USER.hex, now=NOW - 10_000)
    with pytest.raises(TokenError):
        VERIFIER.verify(refused_token)


# --- refusals ------------------------------------------------------------------------------------


def test_alg_none_is_refused() -> None:
    token = encode(claims(role="admin"), SECRET, algorithm="none")
    assert token.endswith(".")
    refused(token)


def test_alg_none_with_a_valid_hs256_signature_is_refused() -> None:
    refused(signed(b'{"alg":"none","typ":"JWT"}', json.dumps(claims()).encode()))


@pytest.mark.parametrize("algorithm", ["HS512", "HS384", "RS256", "ES256", "hs256", "", "None"])
def test_other_algorithms_are_refused(algorithm: str) -> None:
    header = json.dumps({"alg": algorithm, "typ": "JWT"}).encode()
    refused(signed(header, json.dumps(claims()).encode()))


def test_header_without_alg_is_refused() -> None:
    refused(signed(b'{"typ":"JWT"}', json.dumps(claims()).encode()))


def test_hs512_signed_token_is_refused() -> None:
    header = b64(b'{"alg":"HS512","typ":"JWT"}')
    payload = b64(json.dumps(claims()).encode())
    digest = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha512).digest()
    refused(f"{header}.{payload}.{b64(digest)}")


def test_wrong_key_is_refused() -> None:
    refused(encode(claims(), "another-secret-0123456789abcdef"))


def test_tampered_payload_is_refused() -> None:
    header, _, signature = encode(claims(), SECRET).split(".")
    forged = b64(json.dumps(claims(role="admin")).encode())
    refused(f"{header}.{forged}.{signature}")


def test_empty_signature_is_refused() -> None:
    header, payload, _ = encode(claims(), SECRET).split(".")
    refused(f"{header}.{payload}.")


@pytest.mark.parametrize("exp_offset", [0, -1, -3_600])
def test_expired_is_refused(exp_offset: int) -> None:
    refused(encode(claims(exp=int(NOW) + exp_offset), SECRET))


def test_missing_exp_is_refused() -> None:
    token = encode({"sub": USER.hex, "iat": int(NOW)}, SECRET)
    assert "exp" in str(refused(token))


@pytest.mark.parametrize("exp", ["9999999999", True, None, [1], {"at": 1}])
def test_non_numeric_exp_is_refused(exp: object) -> None:
    payload = {"sub": USER.hex, "exp": exp}
    refused(encode(payload, SECRET))


def test_nbf_in_the_future_is_refused() -> None:
    refused(encode(claims(nbf=int(NOW) + 60), SECRET))


def test_issuer_is_checked_only_when_configured() -> None:
    token = encode(claims(iss="someone"), SECRET)
    assert VERIFIER.verify(token, now=NOW).principal.user_id == USER_D
    strict = TokenVerifier(SECRET, issuer="pacco")
    refused(token, strict)
    refused(encode(claims(), SECRET), strict)
    assert strict.verify(encode(claims(iss="pacco"), SECRET), now=NOW).principal.user_id == USER_D


def test_audience_is_checked_only_when_configured() -> None:
    token = encode(claims(aud="elsewhere"), SECRET)
    assert VERIFIER.verify(token, now=NOW).principal.user_id == USER_D
    strict = TokenVerifier(SECRET, audience="operations")
    refused(token, strict)
    refused(encode(claims(), SECRET), strict)
    refused(encode(claims(aud=["a", "b"]), SECRET), strict)
    refused(encode(claims(aud=17), SECRET), strict)


@pytest.mark.parametrize("aud", ["operations", ["operations"], ["other", "operations"]])
def test_audience_as_str_or_list(aud: str | list[str]) -> None:
    strict = TokenVerifier(SECRET, audience="operations")
    assert strict.verify(encode(claims(aud=aud), SECRET), now=NOW).principal.user_id == USER_D


@pytest.mark.parametrize("sub", [None, "", "   ", 42, ["x"]])
def test_missing_or_bad_sub_is_refused(sub: object) -> None:
    payload = {"exp": int(NOW) + 600, "sub": sub}
    refused(encode({k: v for k, v in payload.items() if v is not None}, SECRET))


def garbage_tokens() -> list[Any]:
    good = encode(claims(), SECRET)
    header, payload, signature = good.split(".")
    sig = hmac.new(SECRET.encode(), b"", hashlib.sha256).digest()
    return [
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
def test_garbage_is_refused_with_token_error(token: str) -> None:
    refused(token)


# --- mint ----------------------------------------------------------------------------------------


def minted_claims(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(unb64(token.split(".")[1]))
    return result


def test_mint_writes_sub_iat_and_exp() -> None:
    token = mint(SECRET, USER.hex, ttl_seconds=120, now=NOW)
    assert minted_claims(token) == {"sub": USER.hex, "iat": int(NOW), "exp": int(NOW) + 120}
    verified = VERIFIER.verify(token, now=NOW + 60)
    assert verified.principal == Principal(USER_D, frozenset())
    refused(token, now=NOW + 120)


def test_mint_one_role_is_a_string_and_several_are_a_list() -> None:
    assert minted_claims(mint(SECRET, "u", roles=("admin",), now=NOW))["role"] == "admin"
    several = minted_claims(mint(SECRET, "u", roles=("admin", "ops"), now=NOW))
    assert several["role"] == ["admin", "ops"]
    admin = VERIFIER.verify(mint(SECRET, "u", roles=("Admin", "ops"), now=NOW), now=NOW)
    assert admin.principal.is_admin
    assert admin.principal.roles == frozenset({"admin", "ops"})


def test_mint_with_issuer_and_audience_passes_a_strict_verifier() -> None:
    token = mint(SECRET, USER.hex, issuer="pacco", audience="operations", now=NOW)
    written = minted_claims(token)
    assert written["iss"] == "pacco"
    assert written["aud"] == "operations"
    strict = TokenVerifier(SECRET, issuer="pacco", audience="operations")
    assert strict.verify(token, now=NOW).principal.user_id == USER_D
    refused(mint(SECRET, USER.hex, issuer="pacco", now=NOW), strict)


def test_mint_without_roles_issuer_or_audience_omits_them() -> None:
    written = minted_claims(mint(SECRET, "u", now=NOW))
    assert set(written) == {"sub", "iat", "exp"}


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


def non_canonical_signatures() -> list[Any]:
    header, payload, signature = encode(claims(), SECRET).split(".")
    standard = signature.replace("-", "+").replace("_", "/")
    assert standard != signature, "pick claims whose signature has a - or _"
    return [
        pytest.param(f"{header}.{payload}.{signature}!!!!", id="junk-appended"),
        pytest.param(f"{header}.{payload}.{signature}=", id="padded"),
        pytest.param(f"{header}.{payload}.{standard}", id="standard-alphabet"),
    ]


@pytest.mark.parametrize("token", non_canonical_signatures())
def test_signature_that_is_not_strict_base64url_is_refused(token: str) -> None:
    """RFC 7515: the signature is unpadded base64url; any other spelling is not the token."""
    refused(token)
