"""Operation records in Redis.

Key layout (``P`` is ``OPERATIONS_KEY_PREFIX``, default ``operations``; braces are Redis
Cluster hash tags, so the keys of one operation share a slot):

    P:op:{ID}            hash    the record: id, userId, name, state, code, reason, version,
                                 createdAt, updatedAt, rank (creation order)
    P:op:{ID}:history    list    JSON transitions, oldest first
    P:op:{ID}:seen       set     message ids already applied or judged (drops duplicates)
    P:user:{USER}        zset    the user's operation ids, scored by creation order (``rank``)
    P:index              zset    every operation id, scored by creation order (``rank``)
    P:changes            stream  one entry per applied change: ``op`` (the record as JSON), ``id``,
                                 ``user`` and ``state``; its entry id is the change's cursor

Every key of an operation expires ``OPERATIONS_OPERATION_TTL_SECONDS`` after its last applied
change; reads never extend it. The indexes expire with their newest operation and are pruned
lazily of ids whose record has expired.

Each message is applied by one Lua script (``lua/apply.lua``); a batch of messages is sent as one
pipelined round trip, in delivery order.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .envelope import Envelope
from .errors import StoreError, StoreUnavailable
from .records import Change, OperationRecord, Outcome
from .states import State

APPLY_SCRIPT = (resources.files("operations") / "lua" / "apply.lua").read_text(encoding="utf-8")
MAX_PAGE = 200
# Error replies that say "not now" rather than "not this message": retried, never dead-lettered.
_TRANSIENT = {"OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN"}
_SCAN_FACTOR = 20


@dataclass(frozen=True)
class Keys:
    prefix: str = "operations"

    def record(self, operation_id: str) -> str:
        return f"{self.prefix}:op:{{{operation_id}}}"

    def history(self, operation_id: str) -> str:
        return f"{self.prefix}:op:{{{operation_id}}}:history"

    def seen(self, operation_id: str) -> str:
        return f"{self.prefix}:op:{{{operation_id}}}:seen"

    def user_index(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}"

    @property
    def index(self) -> str:
        return f"{self.prefix}:index"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"


@dataclass(frozen=True)
class Page:
    items: list[OperationRecord]
    next: str | None


@dataclass(frozen=True)
class ListQuery:
    user_id: str | None = None  # None: every user's operations (admins only)
    state: State | None = None
    name: str | None = None
    limit: int = 50
    cursor: str | None = None


class Store(Protocol):
    async def apply(self, envelopes: Sequence[Envelope]) -> list[Change | StoreError]: ...
    async def get(self, operation_id: str) -> OperationRecord | None: ...
    async def history(self, operation_id: str) -> list[dict[str, Any]]: ...
    async def page(self, query: ListQuery) -> Page: ...
    async def ping(self) -> bool: ...


def now() -> str:
    return _iso(dt.datetime.now(dt.UTC))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RedisStore:
    def __init__(
        self,
        client: aioredis.Redis,
        ttl_seconds: int,
        stream_max_length: int = 100_000,
        keys: Keys | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self._ttl = ttl_seconds
        self._max_length = stream_max_length
        self._sha: str | None = None

    @classmethod
    def from_url(
        cls, url: str, ttl_seconds: int, stream_max_length: int, prefix: str
    ) -> RedisStore:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=15
        )
        return cls(client, ttl_seconds, stream_max_length, Keys(prefix))

    async def close(self) -> None:
        await self.redis.aclose()

    async def apply(self, envelopes: Sequence[Envelope]) -> list[Change | StoreError]:
        """Apply each envelope (all must have an operation id) in order, in one round trip.

        Raises StoreUnavailable when Redis cannot be reached: the batch may then be applied in
        part, and applying it again is safe (message ids are deduplicated). A message Redis
        refuses on its own gets a StoreError in its place.
        """
        if not envelopes:
            return []
        try:
            try:
                return await self._apply_pipelined(envelopes)
            except NoScriptError:
                self._sha = None  # Redis restarted without its script cache
                return await self._apply_pipelined(envelopes)
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        except RedisError as error:
            raise StoreUnavailable(f"Redis failed: {error}") from error

    async def _apply_pipelined(self, envelopes: Sequence[Envelope]) -> list[Change | StoreError]:
        if self._sha is None:
            self._sha = str(await self.redis.script_load(APPLY_SCRIPT))
        now_iso = now()
        keys = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for envelope in envelopes:
                op = envelope.operation_id
                assert op is not None
                user = envelope.user_id or ""
                arguments = orjson.dumps(
                    [
                        op,
                        envelope.message_id or "",
                        envelope.state.value,
                        envelope.name,
                        user,
                        envelope.code or "",
                        envelope.reason or "",
                        envelope.message,
                        now_iso,
                        _iso(envelope.sent_at) if envelope.sent_at else "",
                        self._ttl,
                        self._max_length,
                    ]
                )
                pipe.evalsha(
                    self._sha,
                    6,
                    keys.record(op),
                    keys.history(op),
                    keys.seen(op),
                    keys.user_index(user),
                    keys.index,
                    keys.changes,
                    arguments,
                )
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        changes: list[Change | StoreError] = []
        for envelope, reply in zip(envelopes, replies, strict=True):
            assert envelope.operation_id is not None
            if isinstance(reply, NoScriptError | RedisConnectionError | RedisTimeoutError):
                raise reply
            if isinstance(reply, Exception):
                if str(reply).split(" ", 1)[0] in _TRANSIENT:
                    raise StoreUnavailable(f"Redis cannot apply now: {reply}")
                changes.append(StoreError(f"Redis refused the apply script: {reply}"))
                continue
            outcome, snapshot, cursor = reply
            changes.append(
                Change(
                    Outcome(outcome.decode()),
                    envelope.operation_id,
                    snapshot or None,
                    cursor.decode() if cursor else None,
                )
            )
        return changes

    async def get(self, operation_id: str) -> OperationRecord | None:
        try:
            fields: Any = await self.redis.hgetall(self.keys.record(operation_id))
        except RedisError as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return _record(fields)

    async def history(self, operation_id: str) -> list[dict[str, Any]]:
        try:
            entries: Any = await self.redis.lrange(self.keys.history(operation_id), 0, -1)
        except RedisError as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return [orjson.loads(entry) for entry in entries]

    async def page(self, query: ListQuery) -> Page:
        index = self.keys.index if query.user_id is None else self.keys.user_index(query.user_id)
        limit = max(1, min(query.limit, MAX_PAGE))
        score, skip = _decode_cursor(query.cursor)
        items: list[OperationRecord] = []
        scanned, budget = 0, limit * _SCAN_FACTOR
        try:
            while len(items) < limit and scanned < budget:
                chunk = limit - len(items)
                rows: Any = await self.redis.zrange(
                    index,
                    score,
                    "-inf",
                    desc=True,
                    byscore=True,
                    offset=skip,
                    num=chunk,
                    withscores=True,
                )
                if not rows:
                    return Page(items, None)
                records = await self._records([member.decode() for member, _ in rows])
                expired = []
                for (member, row_score), record in zip(rows, records, strict=True):
                    scanned += 1
                    row_score_int = int(row_score)
                    skip = skip + 1 if str(row_score_int) == str(score) else 1
                    score = str(row_score_int)
                    if record is None:
                        expired.append(member)
                    elif _matches(record, query):
                        items.append(record)
                if expired:
                    await self.redis.zrem(index, *expired)
                if len(rows) < chunk:
                    return Page(items, None)
        except RedisError as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return Page(items, _encode_cursor(score, skip))

    async def _records(self, operation_ids: list[str]) -> list[OperationRecord | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for operation_id in operation_ids:
                pipe.hgetall(self.keys.record(operation_id))
            replies: list[Any] = await pipe.execute()
            return [_record(fields) for fields in replies]

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False


def _record(fields: dict[bytes, bytes]) -> OperationRecord | None:
    if not fields or b"state" not in fields:
        return None
    text = {key.decode(): value.decode() for key, value in fields.items()}
    return OperationRecord.from_json(text)


def _matches(record: OperationRecord, query: ListQuery) -> bool:
    if query.state is not None and record.state is not query.state:
        return False
    return query.name is None or record.name == query.name


def _encode_cursor(score: str, skip: int) -> str:
    return base64.urlsafe_b64encode(f"{score}:{skip}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[str, int]:
    if not cursor:
        return "+inf", 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score, skip = base64.urlsafe_b64decode(padded).decode().split(":")
        return str(int(score)), int(skip)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(cursor) from None


class InvalidCursor(StoreError):
    code = "invalid_cursor"

    def __init__(self, cursor: str) -> None:
        super().__init__(f"cursor {cursor[:40]!r} is not one this service issued")
