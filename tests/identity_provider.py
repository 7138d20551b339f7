"""A local identity provider for the tests: RSA and EC keys generated here, their JWKS served by a
real HTTP server on 127.0.0.1 (a thread of the test process), and tokens signed with them. It can
rotate keys, go down (refusing connections, answering 503, or hanging) and come back, and counts
the fetches it answered. Its ``idp`` fixture is made available by ``pytest_plugins`` in
conftest.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

Mode = Literal["up", "503", "hang"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
ISSUER = "https://id.example.test/realms/pacco"
AUDIENCE = "operations"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_signed_hs256(claims: dict[str, Any], key: bytes, kid: str | None = None) -> str:
    """An HS256 token keyed with arbitrary bytes (a PEM, a JWK), signed by hand: PyJWT refuses to
    sign with a public key, which is the whole point of the attack."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(user: str = "alice", ttl: int = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + ttl, "iss": ISSUER, "aud": AUDIENCE, **extra}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        provider = self.server.provider  # type: ignore[attr-defined]
        mode = provider.mode
        if mode == "hang":
            provider.released.wait(timeout=30)
        if mode == "503":
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps(provider.jwks()).encode()
        with provider.lock:
            provider.fetches += 1
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            with provider.lock:
                provider.fetches -= 1  # the client gave up waiting: not a fetch it answered

    def log_message(self, format: str, *args: Any) -> None:
        pass


class IdentityProvider:
    def __init__(self) -> None:
        self.keys: dict[str, PrivateKey] = {}
        self.published: list[str] = []
        self.mode: Mode = "up"
        self.fetches = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- keys and tokens -------------------------------------------------------------------

    def add_key(self, kid: str, kind: Literal["RSA", "EC"], publish: bool = True) -> None:
        self.keys[kid] = (
            rsa.generate_private_key(public_exponent=65_537, key_size=2_048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        if publish:
            self.published.append(kid)

    def sign(self, payload: dict[str, Any], kid: str, algorithm: str | None = None) -> str:
        key = self.keys[kid]
        alg = algorithm or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})

    def public_jwk(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        else:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig"}

    def public_pem(self, kid: str) -> bytes:
        return (
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk(kid) for kid in self.published]}

    # -- the HTTP server ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/pacco/protocol/openid-connect/certs"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.provider = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Down for good: connections to the port are refused until :meth:`start` again."""
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.released.clear()


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    """A running identity provider with an RSA key ``rsa-1`` and an EC key ``ec-1``."""
    provider = IdentityProvider()
    provider.add_key("rsa-1", "RSA")
    provider.add_key("ec-1", "EC")
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
