"""The record hash's compact layout (operations.store.layout): what it stores for a usual
operation, that it stays a small listpack, and that the compact forms keep every id apart."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import redis.asyncio as aioredis

from operations.envelope import Envelope
from operations.records import ApplyOutcome, Change
from operations.states import MessageKind, State
from operations.store.keys import Keys, pack_id, unpack_id
from operations.store.layout import message_field, message_id_of, milliseconds
from operations.store.redis_store import RedisStore
from operations.timestamps import rfc3339
from tests.support import new_id

SENT = dt.datetime(2026, 12, 7, 12, 0, 0, 123_000, tzinfo=dt.UTC)


def message(op: str, state: State, name: str, message_id: str | None, user: str | None) -> Envelope:
    kind = MessageKind.COMMAND if state is State.PENDING else MessageKind.EVENT
    return Envelope(name, "orders", kind, state, op, message_id, user, name, sent_at=SENT)


async def apply(store: RedisStore, envelope: Envelope) -> Change:
    (change,) = await store.apply([envelope])
    assert isinstance(change, Change)
    return change


async def test_a_command_and_its_event_fit_a_small_listpack(redis_client: aioredis.Redis) -> None:
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("layout"))
    op, user, first, second = new_id(), str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4().hex
    await apply(store, message(op, State.PENDING, "create_order", first, user))
    done = await apply(store, message(op, State.COMPLETED, "order_created", second, user))
    assert done.outcome is ApplyOutcome.APPLIED and done.record is not None
    key = store.keys.record(op)
    stored: Any = await redis_client.hgetall(key)
    assert set(stored) == {
        b"u", b"n", b"s", b"v", b"b", b"t",  # the record, no empty code nor reason
        b"1", b"1t", b"2", b"2t",  # the history: message, sent at (the states are implied)
        b"\x01" + uuid.UUID(first).bytes,  # the message ids seen, as their GUIDs' bytes
        b"\x02" + bytes.fromhex(second),
    }  # fmt: skip
    assert stored[b"u"] == uuid.UUID(user).bytes
    assert (stored[b"v"], stored[b"s"], stored[b"1"]) == (b"2", b"completed", b"create_order")
    assert int(stored[b"1t"]) == int(SENT.timestamp() * 1000)
    assert rfc3339(int(stored[b"b"]) / 1000) == done.record.created_at
    updated = int(stored[b"b"]) + int(stored[b"t"])  # ms after createdAt: a small integer
    assert rfc3339(updated / 1000) == done.record.updated_at and int(stored[b"t"]) < 60_000
    assert await redis_client.object("encoding", key) == b"listpack"
    usage: Any = await redis_client.memory_usage(key, samples=0)
    # The listpack (384 bytes of it before, without the times sent), its object, its keyspace
    # entry and its key's name (46 bytes, so 64 with its header).
    assert len(key) == 46 and int(usage) <= 224 + 16 + 24 + 64

    history = await store.history(op)
    assert [(e["version"], e["state"], e["messageId"], e["sentAt"]) for e in history] == [
        (1, "pending", first, rfc3339(SENT)),
        (2, "completed", second, rfc3339(SENT)),
    ]
    assert history[0]["at"] == done.record.created_at
    assert history[1]["at"] == done.record.updated_at
    assert await store.get(op) == done.record


async def test_each_spelling_of_a_message_id_is_its_own_message(
    redis_client: aioredis.Redis,
) -> None:
    """The same string is a duplicate; another spelling of the same GUID is another message."""
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("layout"))
    guid = uuid.uuid4()
    spellings = [str(guid), guid.hex, str(guid).upper(), guid.hex.upper(), f"{{{guid}}}"]
    fields = {message_field(spelling) for spelling in spellings}
    assert len(fields) == len(spellings)
    assert all(message_id_of(message_field(spelling)) == spelling for spelling in spellings)
    op = new_id()
    for version, spelling in enumerate(spellings, start=1):
        name = f"step_{version}"
        change = await apply(store, message(op, State.PENDING, name, spelling, None))
        assert change.outcome is ApplyOutcome.APPLIED and change.record is not None
        assert change.record.version == version
        again = await apply(store, message(op, State.PENDING, f"{name}_again", spelling, None))
        assert again.outcome is ApplyOutcome.DUPLICATE
    history = await store.history(op)
    assert [entry["messageId"] for entry in history] == spellings


async def test_ids_of_any_shape_come_back_as_they_were(redis_client: aioredis.Redis) -> None:
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("layout"))
    owners = [str(uuid.uuid4()), new_id(), "sixteen-chars-id", "user:1", "ünïcode-用户", "x" * 16]
    for owner in owners:
        assert unpack_id(pack_id(owner)) == owner
        op = new_id()
        created = await apply(store, message(op, State.PENDING, "create_order", new_id(), owner))
        assert created.record is not None and created.record.user_id == owner
        # A message from someone else keeps the owner, read back from its stored form.
        done = await apply(store, message(op, State.COMPLETED, "order_created", None, "other"))
        assert done.record is not None and done.record.user_id == owner
        assert (await store.get(op)) == done.record
    guid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
    near = [guid.upper(), guid.replace("-", ""), " " + guid[1:], guid[:-2] + " f", guid[:-1] + "g"]
    near += [guid[:8] + " " + guid[9:], "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f\t"]
    for text in [*owners, guid, *near]:
        assert unpack_id(pack_id(text)) == text
    assert len(pack_id(guid)) == 16 and all(len(pack_id(text)) != 16 for text in near)
    assert len({pack_id(owner) for owner in owners}) == len(set(owners))


async def test_the_snapshot_shows_a_stored_creation_time_of_any_day(
    redis_client: aioredis.Redis,
) -> None:
    """apply.lua writes createdAt into each change's snapshot from the stored milliseconds, as
    operations.timestamps.rfc3339 would: today's by the time of day, any other by the date."""
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("layout"))
    moments = [
        dt.datetime(2024, 2, 29, 23, 59, 59, 999_000, tzinfo=dt.UTC),
        dt.datetime(1999, 12, 31, 0, 0, 0, 7_000, tzinfo=dt.UTC),
        dt.datetime(2100, 3, 1, 12, 30, 45, 500_000, tzinfo=dt.UTC),
        dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1),
    ]
    for moment in moments:
        op = new_id()
        await apply(store, message(op, State.PENDING, "create_order", None, None))
        await redis_client.hset(store.keys.record(op), mapping={"b": milliseconds(moment)})
        done = await apply(store, message(op, State.COMPLETED, "order_created", None, None))
        assert done.record is not None and done.record.created_at == rfc3339(moment)
        assert await store.get(op) == done.record
