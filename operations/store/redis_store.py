"""Operation records in Redis.

The keys are named by :class:`operations.store.keys.Keys`, where their layout is described.

Every key of an operation expires ``OPERATIONS_OPERATION_TTL_SECONDS`` after its last applied
change; reads never extend it. The indexes expire with their newest operation. Within them, an
operation's id is removed by the sweep (:mod:`operations.store.sweeper`, ``lua/sweep.lua``) soon
after its record expires, found through its owner's index, which the shard's owners zset
schedules; a listing that meets an expired id before the sweep does drops it too.

Each message is applied by one Lua script (``lua/apply.lua``); a batch of messages is sent as one
round trip, in delivery order, on one connection. Listing (:mod:`operations.store.listing`) merges
the shards' indexes, newest first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from importlib import resources
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from operations.envelope import Envelope
from operations.errors import StoreError, StoreUnavailable
from operations.records import ApplyOutcome, Change, Operation
from operations.store.keys import Keys, pack_id
from operations.store.layout import STORED, history_of, message_field, milliseconds, operation_of
from operations.store.listing import Listing, ListQuery, Page
from operations.store.redis_client import open_redis, round_trip
from operations.store.shards import Shards
from operations.timestamps import rfc3339

_LUA = resources.files("operations.store") / "lua"
APPLY_SCRIPT = (_LUA / "apply.lua").read_text(encoding="utf-8")
SWEEP_SCRIPT = (_LUA / "sweep.lua").read_text(encoding="utf-8")
PRUNE_SCRIPT = (_LUA / "prune.lua").read_text(encoding="utf-8")
DEFAULT_MAX_HISTORY = 1_000
SWEEP_BATCH = 500
SWEEP_MOST = 50_000
# Error replies that say "not now" rather than "not this message": retried, never dead-lettered.
_TRANSIENT = {"OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN"}


class Store(Protocol):
    async def apply(self, envelopes: Sequence[Envelope]) -> list[Change | StoreError]: ...
    async def get(self, operation_id: str) -> Operation | None: ...
    async def history(self, operation_id: str) -> list[dict[str, Any]]: ...
    async def page(self, query: ListQuery) -> Page: ...
    async def ping(self) -> bool: ...


def now() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


class RedisStore:
    def __init__(
        self,
        client: aioredis.Redis,
        ttl_seconds: int,
        stream_max_length: int = 100_000,
        keys: Keys | None = None,
        max_history: int = DEFAULT_MAX_HISTORY,
    ) -> None:
        self.redis = client
        self.keys = keys or Keys()
        self._ttl = ttl_seconds
        self._max_length = stream_max_length
        self._max_history = max_history
        self._sha: str | None = None
        self._round_trip_timeout = _socket_timeout(client)
        self._sweep = client.register_script(SWEEP_SCRIPT)
        self._prune = client.register_script(PRUNE_SCRIPT)
        self._listing = Listing(client, self.keys, self._records, self.prune)

    @classmethod
    def from_url(
        cls,
        url: str,
        ttl_seconds: int,
        stream_max_length: int,
        prefix: str,
        shards: Shards | None = None,
        cluster: bool = False,
        max_history: int = DEFAULT_MAX_HISTORY,
    ) -> RedisStore:
        client = open_redis(url, cluster)
        keys = Keys(prefix, shards or Shards())
        return cls(client, ttl_seconds, stream_max_length, keys, max_history)

    async def claim_layout(self) -> None:
        """Records the shard count in Redis, or checks it against the one recorded there.

        Raises LayoutMismatch when the data was written with another count, and
        StoreUnavailable when Redis cannot be reached.
        """
        count = len(self.keys.shards)
        try:
            await self.redis.set(self.keys.layout, count, nx=True)
            recorded: Any = await self.redis.get(self.keys.layout)
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        if recorded is not None and int(recorded) != count:
            raise LayoutMismatch(int(recorded), count)

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
                return await self._apply_batch(envelopes)
            except NoScriptError:
                self._sha = None  # Redis restarted without its script cache
                return await self._apply_batch(envelopes)
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        except RedisError as error:
            raise StoreUnavailable(f"Redis failed: {error}") from error

    async def _apply_batch(self, envelopes: Sequence[Envelope]) -> list[Change | StoreError]:
        if self._sha is None:
            self._sha = str(await self.redis.script_load(APPLY_SCRIPT))
        moment = dt.datetime.now(dt.UTC)
        now_iso, now_ms = rfc3339(moment), milliseconds(moment)
        keys = self.keys
        calls: list[_Call] = []
        # AMQP timestamps are whole seconds, and a batch has few users: most of a batch shares
        # a handful of each.
        sent_times: dict[dt.datetime, int] = {}
        users: dict[str, bytes] = {}
        for envelope in envelopes:
            op = envelope.operation_id
            assert op is not None
            shard = keys.shard(op)
            user = envelope.user_id or ""
            packed = users.get(user)
            if packed is None:
                packed = users[user] = pack_id(user) if user else b""
            arguments = orjson.dumps(
                [
                    op,
                    envelope.state.value,
                    envelope.name,
                    user,
                    envelope.code or "",
                    envelope.reason or "",
                    envelope.message,
                    now_iso,
                    now_ms,
                    _sent_ms(envelope.sent_at, sent_times),
                    self._ttl,
                    self._max_length,
                    self._max_history,
                ]
            )
            member = pack_id(op)
            calls.append(
                (
                    keys.record_of(shard, member),
                    keys.user_index(user, shard),
                    keys.index(shard),
                    keys.changes(shard),
                    keys.owners(shard),
                    arguments,
                    message_field(envelope.message_id) if envelope.message_id else b"",
                    packed,
                    member,
                )
            )
        if isinstance(self.redis, RedisCluster):
            replies = await self._evalsha_routed(calls)
        else:
            replies = await self._evalsha_direct(calls)
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
                    ApplyOutcome(outcome.decode()),
                    envelope.operation_id,
                    snapshot or None,
                    cursor.decode() if cursor else None,
                )
            )
        return changes

    async def _evalsha_direct(self, calls: list[_Call]) -> list[Any]:
        """One EVALSHA per call (five keys, four arguments) on one server, in one round trip.

        The batch is encoded as RESP here and written at once, and the replies are read straight
        off the connection: the same wire traffic as a pipeline, without a pipeline's work per
        command (see :func:`redis_client.round_trip`)."""
        assert self._sha is not None
        pool = self.redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await round_trip(
                connection, pack_evalsha(self._sha, calls), len(calls), self._round_trip_timeout
            )
        finally:
            await pool.release(connection)

    async def _evalsha_routed(self, calls: list[_Call]) -> list[Any]:
        """The same on a Redis Cluster, through a pipeline that sends each call to the node of
        its keys' slot."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                # EVALSHA through execute_command: a Redis Cluster pipeline routes it by its
                # keys (all of one slot) but refuses the evalsha() shortcut.
                pipe.execute_command("EVALSHA", self._sha, 5, *call)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def get(self, operation_id: str) -> Operation | None:
        """The record, or None when it is unknown or expired; also when its key holds something
        else (written by another layout or by hand): a read never tells that apart."""
        try:
            # The hash also holds one ``m:`` field per message id seen, which a read never needs.
            fields: Any = await self.redis.hmget(self.keys.record(operation_id), STORED)
        except ResponseError as error:
            if wrong_type(error):
                return None
            raise StoreUnavailable(f"Redis failed: {error}") from error
        except RedisError as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return operation_of(operation_id, fields)

    async def history(self, operation_id: str) -> list[dict[str, Any]]:
        """The history, oldest first, from the record hash."""
        try:
            fields: Any = await self.redis.hgetall(self.keys.record(operation_id))
        except ResponseError as error:
            if wrong_type(error):
                return []
            raise StoreUnavailable(f"Redis failed: {error}") from error
        except RedisError as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return history_of(fields, self._max_history)

    async def page(self, query: ListQuery) -> Page:
        """One page, newest first, merged over the shards (see :mod:`operations.store.listing`)."""
        return await self._listing.page(query)

    async def _records(self, operation_ids: list[str]) -> list[Operation | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for operation_id in operation_ids:
                pipe.hmget(self.keys.record(operation_id), STORED)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        records: list[Operation | None] = []
        for operation_id, fields in zip(operation_ids, replies, strict=True):
            if isinstance(fields, ResponseError) and wrong_type(fields):
                records.append(None)
            elif isinstance(fields, Exception):
                raise fields
            else:
                records.append(operation_of(operation_id, fields))
        return records

    async def sweep(self, batch: int = SWEEP_BATCH, most: int = SWEEP_MOST) -> int:
        """Removes operations whose records have expired from every shard's indexes, at most
        ``most`` per shard in one call, ``batch`` per script run; returns how many."""
        removed = 0
        try:
            for shard in self.keys.shards:
                keys = [self.keys.owners(shard), self.keys.index(shard)]
                arguments: list[str | int] = [self.keys.tag(shard), batch, self._ttl]
                for _ in range(max(1, most // batch)):
                    gone, more = await self._sweep(keys=keys, args=arguments)
                    removed += int(gone)
                    if not int(more):
                        break
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis unreachable: {error}") from error
        return removed

    async def prune(self, index: str, shard: int, members: Sequence[bytes]) -> int:
        """Removes from ``index`` (of ``shard``) those of ``members`` (operation ids as the
        indexes hold them) whose record is gone, in one script, so that one created again
        meanwhile stays listed."""
        if not members:
            return 0
        removed = await self._prune(keys=[index], args=[self.keys.tag(shard), *members])
        return int(removed)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False


# The apply script's keys (record, owner's index, index, stream, owners) and arguments (the
# JSON one, the message id's field, the user id's and the operation id's stored forms).
_Call = tuple[bytes | str, str, str, str, str, bytes, bytes, bytes, bytes]


def pack_evalsha(sha: str, calls: Sequence[_Call]) -> bytes:
    """``EVALSHA sha 5 key... argument...`` for each call, encoded as RESP: byte for byte what
    redis-py's ``pack_commands`` makes of the same commands (a test holds it to that)."""
    head = b"*12\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$1\r\n5\r\n" % (len(sha), sha.encode())
    # One formatting per call: its nine bulk strings at once.
    bulk = head.replace(b"%", b"%%") + b"$%d\r\n%s\r\n" * 9
    chunks: list[bytes] = []
    for record, owner_index, index, stream, owners, arguments, seen, user, member in calls:
        key = record.encode() if isinstance(record, str) else record
        k2, k3, k4, k5 = owner_index.encode(), index.encode(), stream.encode(), owners.encode()
        chunks.append(
            bulk
            % (
                len(key), key, len(k2), k2, len(k3), k3, len(k4), k4, len(k5), k5,
                len(arguments), arguments, len(seen), seen, len(user), user, len(member), member,
            )
        )  # fmt: skip
    return b"".join(chunks)


def wrong_type(error: ResponseError) -> bool:
    """Whether Redis refused a command because a key holds another type."""
    return str(error).startswith("WRONGTYPE")


def _sent_ms(sent_at: dt.datetime | None, known: dict[dt.datetime, int]) -> int | str:
    if sent_at is None:
        return ""
    stored = known.get(sent_at)
    if stored is None:
        stored = known[sent_at] = milliseconds(sent_at)
    return stored


def _socket_timeout(client: aioredis.Redis) -> float:
    if isinstance(client, RedisCluster):
        return 30.0
    configured = client.connection_pool.connection_kwargs.get("socket_timeout")
    return float(configured) if configured else 30.0


class LayoutMismatch(StoreError):
    """The data in Redis was written with another shard count."""

    code = "layout_mismatch"

    def __init__(self, recorded: int, configured: int) -> None:
        super().__init__(
            f"the data in Redis was written with {recorded} shard(s) but OPERATIONS_REDIS_SHARDS"
            f" is {configured}; set it back to {recorded} (the shard count cannot change while"
            " operations are stored)"
        )
        self.recorded, self.configured = recorded, configured
