"""JSON Web Tokens: verified and minted by PyJWT; this module maps their claims to a Principal.

Which algorithms are accepted follows from the settings, and nothing else:

- ``HS256`` with ``OPERATIONS_JWT_SECRET``, when a secret is in use;
- ``RS256`` and ``ES256`` with the identity provider's keys, by ``kid``, when
  ``OPERATIONS_JWT_JWKS_URL`` is set (see :mod:`operations.auth.jwks`).

The key is chosen by the token's ``alg`` and then PyJWT is told to accept that one algorithm
only, so a token can never pick its own key type: an HS256 token "signed" with the provider's
public key is checked against the secret (or refused when there is none) and fails.

PyJWT is lenient in two places, which are closed here: every segment must be canonical unpadded
base64url (PyJWT ignores the unused trailing bits, so a signature had four spellings), and
``exp``, ``nbf`` and ``iat`` must be JSON numbers (PyJWT reads ``"nbf": "9999999999"``).

A token once verified is accepted again without being decoded and checked again for at most
``VERIFIED_SECONDS``, never past its ``exp``, and, for a token signed by the identity provider,
only while the provider's key set has not been fetched again since: a browser that reconnects, or
calls the API many times, with the same token costs one verification a minute rather than one
each time (a connection's verification was about a third of its cost). At most ``MAX_VERIFIED``
are kept, the ones used longest ago dropped first.

A token's ``sub`` must be an id by :func:`operations.auth.identity.id_problem` (at most 200
printable characters): the user id a message can carry, so every operation the token starts is its
own.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from operations.auth.identity import Principal, id_problem, normalise_id
from operations.auth.jwks import KEY_TYPES, ProviderKeys
from operations.errors import TokenError

MAX_TOKEN_LENGTH = 8_192
HS256 = "HS256"
DEFAULT_ROLE_CLAIM = "role"
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_TIME_CLAIMS = ("exp", "nbf", "iat")
VERIFIED_SECONDS = 60.0
MAX_VERIFIED = 10_000


@dataclass(frozen=True)
class Verified:
    principal: Principal
    expires_at: float
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class _Kept:
    """A token verified lately: what it gave, until when, and with which key."""

    token: str
    verified: Verified
    until: float
    algorithm: str
    kid: Any
    key: Any


class TokenVerifier:
    def __init__(
        self,
        secret: str | None,
        issuer: str | None = None,
        audience: str | None = None,
        role_claim: str = DEFAULT_ROLE_CLAIM,
        provider: ProviderKeys | None = None,
        leeway_seconds: float = 0.0,
    ) -> None:
        self.secret = secret
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.provider = provider
        self.leeway_seconds = leeway_seconds
        self.algorithms = frozenset(
            ([HS256] if secret else []) + (list(KEY_TYPES) if provider is not None else [])
        )
        self._verified: dict[str, _Kept] = {}  # oldest used first

    async def verify(self, token: object) -> Verified:
        """The token's principal and expiry; a TokenError for anything not accepted."""
        now = time.time()
        kept = self._verified.pop(token, None) if isinstance(token, str) else None
        if kept is not None and now < kept.until and await self._key_unchanged(kept):
            self._verified[kept.token] = kept  # again the newest
            return kept.verified
        header = _header(token)
        assert isinstance(token, str)
        _check_time_claims(token.split(".")[1])
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise TokenError(f"token algorithm {algorithm!r} is not accepted")
        key: Any
        if algorithm == HS256:
            key = self.secret
        else:
            assert self.provider is not None
            key = await self.provider.key(header.get("kid"), algorithm)
        verified = self._decode(token, key, algorithm)
        if len(self._verified) >= MAX_VERIFIED:
            del self._verified[next(iter(self._verified))]  # the one used longest ago
        # PyJWT accepts a token until exp + leeway.
        until = min(verified.expires_at + self.leeway_seconds, now + VERIFIED_SECONDS)
        self._verified[token] = _Kept(token, verified, until, algorithm, header.get("kid"), key)
        return verified

    @property
    def kept(self) -> int:
        """Tokens verified lately and kept."""
        return len(self._verified)

    async def _key_unchanged(self, kept: _Kept) -> bool:
        """The secret does not change; a provider's key is the one kept only until the key set
        is fetched again (when it goes stale, or a token names a kid it lacks)."""
        if kept.algorithm == HS256:
            return True
        assert self.provider is not None
        try:
            return await self.provider.key(kept.kid, kept.algorithm) is kept.key
        except TokenError:
            return False

    def _decode(self, token: str, key: Any, algorithm: str) -> Verified:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as error:
            raise TokenError(f"token refused: {error}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise TokenError("token has no sub")
        # A sub no message could carry as its user id would start operations nobody may read.
        problem = id_problem(subject)
        if problem is not None:
            raise TokenError(f"token sub {problem}")
        principal = Principal(normalise_id(subject), roles_at(claims, self.role_claim))
        return Verified(principal, float(claims["exp"]), claims)


def roles_at(claims: Mapping[str, Any], path: str = DEFAULT_ROLE_CLAIM) -> frozenset[str]:
    """The roles a token holds at ``path``, case-folded: a claim name, or a dotted path into
    nested objects such as ``realm_access.roles``; its value a string or a list of them. A claim
    whose whole name is ``path`` (a URI, say) is read as it is."""
    value: Any = claims.get(path) if path in claims else claims
    if path not in claims:
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return frozenset({value.lower()})
    if isinstance(value, list):
        return frozenset(item.lower() for item in value if isinstance(item, str))
    return frozenset()


def mint(
    secret: str,
    user_id: str,
    roles: tuple[str, ...] = (),
    ttl_seconds: int = 3_600,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token for ``user_id``; ``extra`` claims are added last and win."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user_id, "iat": issued, "exp": issued + ttl_seconds}
    if roles:
        claims["role"] = roles[0] if len(roles) == 1 else list(roles)
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm=HS256)


def _header(token: object) -> dict[str, Any]:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("token missing, not a string, or too long")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenError("token is not a compact JWS")
    for what, segment in zip(("header", "payload", "signature"), segments, strict=True):
        if not _canonical(segment):
            raise TokenError(f"token {what} is not canonical unpadded base64url")
    # Read here, once: PyJWT's own reader would check every character again, as its decode
    # does later (a token is checked at every connect).
    try:
        header = orjson.loads(_b64decode(segments[0]))
    except (binascii.Error, ValueError):
        raise TokenError("token header refused: not base64url JSON") from None
    if not isinstance(header, dict):
        raise TokenError("token header refused: not a JSON object")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenError("token header refused: Key ID header parameter must be a string")
    return header


def _check_time_claims(payload_segment: str) -> None:
    """PyJWT reads ``exp``, ``nbf`` and ``iat`` with ``int()``, so ``"9999999999"`` or ``true``
    would pass as times. They are looked at before anything else: a JSON number, or refused."""
    try:
        payload = orjson.loads(_b64decode(payload_segment))
    except (binascii.Error, ValueError):
        raise TokenError("token payload is not base64url JSON") from None
    if not isinstance(payload, dict):
        raise TokenError("token payload is not a JSON object")
    for name in _TIME_CLAIMS:
        value = payload.get(name)
        if name in payload and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise TokenError(f"token {name} is not a number")


def _canonical(segment: str) -> bool:
    """Whether the segment is the one spelling RFC 7515 allows: unpadded base64url that encodes
    its bytes back to itself (no stray trailing bits, no other alphabet, no padding)."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        return False
    try:
        decoded = _b64decode(segment)
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() == segment


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
