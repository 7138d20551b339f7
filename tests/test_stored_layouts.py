"""Operations written by an earlier version of the service, read and updated by this one.

The earlier layout is written by that version's own apply script (kept verbatim in
``tests/fixtures/layouts/``): its history in a list of its own, its message ids seen as ``m:``
fields with empty values."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from operations.envelope import Envelope
from operations.keys import Keys
from operations.listing import ListQuery
from operations.records import ApplyOutcome, Change
from operations.states import MessageKind, State
from operations.store import RedisStore, now
from tests.support import new_id

HISTORY_LIST_SCRIPT = (
    Path(__file__).parent / "fixtures" / "layouts" / "apply-history-list.lua"
).read_text(encoding="utf-8")
USER = "0b9d7c54-0000-4000-8000-00000000002a"


async def _apply_as_before(
    redis: aioredis.Redis,
    keys: Keys,
    op: str,
    state: State,
    message: str,
    message_id: str,
    ttl: int = 600,
) -> None:
    """One message applied by the earlier script, with the keys and argument it was given."""
    shard = keys.shard(op)
    arguments = [op, message_id, state.value, "create_order", USER, "", "", message, now(), ""]
    reply = await redis.eval(
        HISTORY_LIST_SCRIPT,
        6,
        keys.record(op),
        keys.history(op),
        keys.user_index(USER, shard),
        keys.index(shard),
        keys.changes(shard),
        keys.expiries(shard),
        orjson.dumps([*arguments, ttl, 1_000, 1_000]),
    )
    assert reply[0] == b"applied"


def _envelope(op: str, state: State, message: str, message_id: str) -> Envelope:
    kind = MessageKind.COMMAND if state is State.PENDING else MessageKind.EVENT
    return Envelope(message, "orders", kind, state, op, message_id, USER, "create_order")


async def test_an_operation_written_with_its_history_in_a_list_reads_and_moves_on(
    redis_client: aioredis.Redis,
) -> None:
    keys = Keys("layouts")
    store = RedisStore(redis_client, ttl_seconds=60, keys=keys)
    op = new_id()
    await _apply_as_before(redis_client, keys, op, State.PENDING, "create_order", "m-1")
    assert await redis_client.llen(keys.history(op)) == 1

    record = await store.get(op)
    assert record is not None
    assert (record.id, record.user_id, record.state, record.version) == (
        op,
        USER,
        State.PENDING,
        1,
    )
    (first,) = await store.history(op)
    assert (first["version"], first["state"], first["message"], first["messageId"]) == (
        1,
        "pending",
        "create_order",
        "m-1",
    )
    assert [item.id for item in (await store.page(ListQuery(user_id=USER))).items] == [op]

    # A message the earlier version applied is still a duplicate.
    (again,) = await store.apply([_envelope(op, State.PENDING, "create_order", "m-1")])
    assert isinstance(again, Change) and again.outcome is ApplyOutcome.DUPLICATE

    await redis_client.expire(keys.history(op), 5)
    (done,) = await store.apply([_envelope(op, State.COMPLETED, "order_created", "m-2")])
    assert isinstance(done, Change) and done.outcome is ApplyOutcome.APPLIED
    history = await store.history(op)
    assert [(entry["version"], entry["message"], entry["messageId"]) for entry in history] == [
        (1, "create_order", "m-1"),
        (2, "order_created", "m-2"),
    ]
    assert history[0] == first
    assert set(history[1]) == set(first)
    # The earlier list lives as long as its record now, and nothing writes to it any more.
    assert 55 < await redis_client.ttl(keys.history(op)) <= 60
    assert await redis_client.llen(keys.history(op)) == 1
    record = await store.get(op)
    assert record is not None and (record.state, record.version) == (State.COMPLETED, 2)
    assert [item.id for item in (await store.page(ListQuery(user_id=USER))).items] == [op]
    assert [item.id for item in (await store.page(ListQuery())).items][:1] == [op]


async def test_each_history_entry_keeps_its_time_and_name(
    redis_client: aioredis.Redis,
) -> None:
    """The newest entry's time and name are the record's updatedAt and name; the entry before it
    keeps them when a newer one comes."""
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("layouts"))
    op = new_id()
    times = []
    steps = (
        (State.PENDING, "create_order", "create_order", "m-1"),
        (State.PENDING, "add_parcel_to_order", "adding a parcel", "m-2"),
        (State.PENDING, "approve_order", "approve_order", "m-3"),
        (State.COMPLETED, "order_approved", "approved", "m-4"),
    )
    for state, message, name, message_id in steps:
        envelope = _envelope(op, state, message, message_id)
        (change,) = await store.apply([replace(envelope, name=name)])
        assert isinstance(change, Change) and change.record is not None
        times.append(change.record.updated_at)
        history = await store.history(op)
        assert [entry["at"] for entry in history] == times
        assert [entry["messageId"] for entry in history][-1] == message_id
        assert [entry["name"] for entry in history] == [step[2] for step in steps[: len(times)]]
    assert [entry["message"] for entry in history] == [
        "create_order",
        "add_parcel_to_order",
        "approve_order",
        "order_approved",
    ]
    record = await store.get(op)
    assert record is not None and times[0] == record.created_at


async def test_an_operation_an_earlier_version_scheduled_in_its_expiries_set_is_swept(
    redis_client: aioredis.Redis,
) -> None:
    """Earlier versions scheduled the sweep with one expiries member per operation; the sweep
    still reads them, and keeps their set for as long as it has members."""
    keys = Keys("layouts")
    short = RedisStore(redis_client, ttl_seconds=2, keys=keys)
    lasting = RedisStore(redis_client, ttl_seconds=60, keys=keys)
    op = new_id()
    await _apply_as_before(redis_client, keys, op, State.PENDING, "create_order", "m-1", ttl=2)
    keeper = new_id()  # one shard: its indexes outlive the earlier operation
    await lasting.apply([_envelope(keeper, State.PENDING, "create_order", "m-2")])
    shard = keys.shard(op)
    expiries = keys.expiries(shard)
    assert await redis_client.zcard(expiries) == 1
    assert await short.sweep() == 0  # not expired yet; the set is kept past its own expiry
    assert await redis_client.pttl(expiries) > 2_500
    await asyncio.sleep(2.3)
    assert await short.get(op) is None
    assert await short.sweep() == 1
    for index in (keys.index(shard), keys.user_index(USER, shard)):
        assert await redis_client.zscore(index, op) is None
        assert await redis_client.zscore(index, keeper) is not None
    assert await redis_client.exists(expiries) == 0
