"""HS256 JSON Web Tokens: the service verifies them, and ``operations token`` mints them.

Only HS256 is accepted: ``alg=none`` and every other algorithm are refused, and so is a token with
no ``exp``. ``iss`` and ``aud`` are checked when configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import TokenError
from .identity import Principal, normalise_id

MAX_TOKEN_LENGTH = 8_192
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Verified:
    principal: Principal
    expires_at: float
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class TokenVerifier:
    secret: str
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: float = 0.0

    def verify(self, token: str, now: float | None = None) -> Verified:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token missing or too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("token is not a compact JWS")
        header = _json_part(parts[0], "header")
        if header.get("alg") != "HS256":
            raise TokenError("token algorithm must be HS256")
        expected = _sign(f"{parts[0]}.{parts[1]}".encode(), self.secret)
        if not hmac.compare_digest(expected, _b64decode(parts[2], "signature")):
            raise TokenError("token signature does not match")
        claims = _json_part(parts[1], "payload")
        now = time.time() if now is None else now
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise TokenError("token has no numeric exp")
        if exp + self.leeway_seconds <= now:
            raise TokenError("token has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf - self.leeway_seconds > now:
            raise TokenError("token is not valid yet")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise TokenError("token issuer is not accepted")
        if self.audience is not None and not _has_audience(claims.get("aud"), self.audience):
            raise TokenError("token audience is not accepted")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise TokenError("token has no sub")
        return Verified(Principal(normalise_id(subject), _roles(claims)), float(exp), claims)


def mint(
    secret: str,
    user_id: str,
    roles: tuple[str, ...] = (),
    ttl_seconds: int = 3_600,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user_id, "iat": issued, "exp": issued + ttl_seconds}
    if roles:
        claims["role"] = roles[0] if len(roles) == 1 else list(roles)
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return encode(claims, secret)


def encode(claims: Mapping[str, Any], secret: str, algorithm: str = "HS256") -> str:
    header = _b64encode(orjson.dumps({"alg": algorithm, "typ": "JWT"}))
    payload = _b64encode(orjson.dumps(dict(claims)))
    signing_input = f"{header}.{payload}"
    signature = _b64encode(_sign(signing_input.encode(), secret)) if algorithm == "HS256" else ""
    return f"{signing_input}.{signature}"


def _sign(data: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(part: str, what: str) -> bytes:
    if not _BASE64URL.fullmatch(part):
        raise TokenError(f"token {what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"token {what} is not base64url") from None


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_b64decode(part, what))
    except orjson.JSONDecodeError:
        raise TokenError(f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"token {what} is not a JSON object")
    return value


def _has_audience(claim: Any, audience: str) -> bool:
    if isinstance(claim, str):
        return claim == audience
    return isinstance(claim, list) and audience in claim


_ROLE_CLAIMS = ("role", "roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")


def _roles(claims: Mapping[str, Any]) -> frozenset[str]:
    roles: set[str] = set()
    for key in _ROLE_CLAIMS:
        value = claims.get(key)
        if isinstance(value, str):
            roles.add(value.lower())
        elif isinstance(value, list):
            roles.update(item.lower() for item in value if isinstance(item, str))
    return frozenset(roles)
