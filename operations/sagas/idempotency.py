"""``Idempotency-Key`` on the routes that start a saga (``POST /sagas/{name}``, ``POST /orders``),
as the IETF httpapi draft describes it: a client that retries a start with the same key and body
gets the first answer again, with the same operation id, and never a second saga.

A key belongs to one user and one route (the saga's name, or ``orders``). The first request with
it reserves it in Redis, in one script (``lua/idempotency.lua``): the body's fingerprint, the new
operation id and the resource id (the order id). It then publishes the start message; once the
broker confirms it, the reservation is marked ``started`` and kept
``OPERATIONS_IDEMPOTENCY_SECONDS``. If the publish fails, the reservation is released, so that a
retry starts the saga. A reservation that is never confirmed (the process stopped mid-publish)
lapses after :data:`RESERVATION_SECONDS`.

A repeat with the same body is answered from the reservation once it is ``started``, waiting up
to :data:`WAIT_SECONDS` for one in flight; with another body it is refused
(:class:`IdempotencyKeyReused`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from operations.errors import (
    BrokerUnavailable,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    StoreUnavailable,
)
from operations.metrics import Registry
from operations.store.keys import IdempotencyKeys

log = logging.getLogger("operations.sagas.idempotency")

SCRIPT = (resources.files("operations.store") / "lua" / "idempotency.lua").read_text(
    encoding="utf-8"
)
HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
RESERVATION_SECONDS = 60
"""How long a reservation outlives a process that stopped before the broker confirmed its
message; longer than any publish may take (see ``PUBLISH_SECONDS`` in sagas/http_start.py)."""
WAIT_SECONDS = 5.0
"""How long a repeat waits for the first request with its key to be confirmed."""
_POLL_FIRST, _POLL_MAX = 0.01, 0.25


def idempotency_key(values: Sequence[str]) -> str | None:
    """The request's ``Idempotency-Key`` (the header's values), or None without one.

    Raises :class:`InvalidIdempotencyKey` for an empty one, one over :data:`MAX_KEY_LENGTH`
    characters or outside printable ASCII, or more than one. The draft writes the key as a
    Structured Field string (``"abc"``); a bare token, as Stripe's clients send it, is taken as
    it is."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKey(
            "Idempotency-Key", "give one Idempotency-Key header, not several"
        )
    key = _unquoted(values[0].strip())
    if not key:
        raise InvalidIdempotencyKey("Idempotency-Key", "the Idempotency-Key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            "Idempotency-Key", f"the Idempotency-Key must be at most {MAX_KEY_LENGTH} characters"
        )
    if not all(" " <= ch <= "~" for ch in key):
        raise InvalidIdempotencyKey(
            "Idempotency-Key", "the Idempotency-Key must be printable ASCII"
        )
    return key


def _unquoted(value: str) -> str:
    """A Structured Field string's content (RFC 8941 §3.3.3), or ``value`` when it is not one."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    inner, text, escaped = value[1:-1], [], False
    for ch in inner:
        if escaped:
            if ch not in '"\\':
                return value
            text.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return value
        else:
            text.append(ch)
    return value if escaped else "".join(text)


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A start request with an ``Idempotency-Key``: what makes a repeat the same request."""

    route: str
    """The route, as the metric labels it: ``saga_start`` or ``orders``."""
    scope: str
    """What the key is scoped to beside the user: the route's path (``/sagas/NAME``)."""
    key: str
    fingerprint: str
    """The sha256 of the scope and the body as decoded, in canonical JSON."""

    @classmethod
    def of(cls, route: str, scope: str, key: str, document: Any) -> IdempotentRequest:
        canonical = orjson.dumps([scope, document], option=orjson.OPT_SORT_KEYS)
        return cls(route, scope, key, hashlib.sha256(canonical).hexdigest())


@dataclass(frozen=True, slots=True)
class Started:
    """A started saga's operation id, its resource id (an order's id) if any, and whether this
    answer replays an earlier request's."""

    operation_id: str
    resource_id: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Held:
    fingerprint: str
    started: Started
    state: str


class Idempotency:
    """The reservations of ``Idempotency-Key``\\ s in Redis, one script call each."""

    def __init__(
        self, redis: Redis | RedisCluster, keys: IdempotencyKeys, seconds: int, metrics: Registry
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.seconds = seconds
        self.metrics = metrics
        self._script = redis.register_script(SCRIPT)

    def reservation(self, user_id: str, request: IdempotentRequest) -> str:
        """The Redis key of ``request``'s key for ``user_id``: all three hashed, so that none
        can be read as another."""
        named = orjson.dumps([request.scope, user_id, request.key])
        return self.keys.reservation(hashlib.sha256(named).hexdigest())

    async def start(
        self,
        user_id: str,
        request: IdempotentRequest,
        fresh: Started,
        publish: Callable[[], Awaitable[None]],
    ) -> Started:
        """``fresh`` once ``publish`` has started it, if this is the first request with the key;
        else the first one's answer, replayed.

        Raises :class:`IdempotencyKeyReused` when the key was used with another body,
        :class:`IdempotencyKeyInFlight` when the first is not confirmed within
        :data:`WAIT_SECONDS`, and what ``publish`` raises (the key released)."""
        key = self.reservation(user_id, request)
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + WAIT_SECONDS
        pause = _POLL_FIRST
        while True:
            held = await self._reserve(key, owner, request.fingerprint, fresh)
            if held is None:
                return await self._first(key, owner, fresh, publish)
            if held.fingerprint != request.fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used with another body; use a new key for"
                    " a new request"
                )
            if held.state == "started":
                self.metrics.idempotent_replays.inc(route=request.route)
                return held.started
            left = deadline - time.monotonic()
            if left <= 0:
                raise IdempotencyKeyInFlight(
                    "the first request with this Idempotency-Key is still in progress; retry"
                    " shortly"
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)

    async def _first(
        self, key: str, owner: str, fresh: Started, publish: Callable[[], Awaitable[None]]
    ) -> Started:
        try:
            await publish()
        except BrokerUnavailable:
            await self._call(key, "release", owner)
            raise
        try:
            await self._call(key, "confirm", owner, self.seconds * 1000)
        except StoreUnavailable as error:
            # The saga is started: answer so. Until its lease lapses the key stays reserved.
            log.warning(
                "the Idempotency-Key of operation %s was not confirmed: %s",
                fresh.operation_id,
                error,
            )
        return fresh

    async def _reserve(
        self, key: str, owner: str, fingerprint: str, fresh: Started
    ) -> _Held | None:
        reply = await self._call(
            key,
            "reserve",
            owner,
            fingerprint,
            fresh.operation_id,
            fresh.resource_id or "",
            RESERVATION_SECONDS * 1000,
        )
        if int(reply[0]) == 1:
            return None
        held_fingerprint, operation_id, resource_id, state = (_text(part) for part in reply[1:5])
        return _Held(held_fingerprint, Started(operation_id, resource_id or None, True), state)

    async def _call(self, key: str, *args: str | int) -> Any:
        try:
            return await self._script(keys=[key], args=list(args))
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
