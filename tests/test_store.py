"""The Lua apply script against a real Redis: the state rules of contract §3."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from operations.envelope import Envelope
from operations.errors import StoreUnavailable
from operations.records import ApplyOutcome, Change
from operations.states import MessageKind, State
from operations.store.keys import Keys
from operations.store.layout import message_field
from operations.store.listing import ListQuery
from operations.store.redis_store import RedisStore
from operations.store.shards import Shards
from tests.support import as_text, new_id

USER = "7f0b2c1e-0000-4000-8000-000000000001"


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[RedisStore]:
    yield RedisStore(redis_client, ttl_seconds=60, stream_max_length=1_000, keys=Keys("t"))


def envelope(
    op: str,
    state: State,
    name: str = "create_order",
    message_id: str | None = None,
    user: str | None = USER,
    code: str | None = None,
    reason: str | None = None,
) -> Envelope:
    kind = {
        State.PENDING: MessageKind.COMMAND,
        State.COMPLETED: MessageKind.EVENT,
        State.REJECTED: MessageKind.REJECTED_EVENT,
    }[state]
    return Envelope(
        message=name,
        exchange="orders",
        kind=kind,
        state=state,
        operation_id=op,
        message_id=message_id if message_id is not None else new_id(),
        user_id=user,
        name=name,
        code=code,
        reason=reason,
    )


async def apply_one(store: RedisStore, env: Envelope) -> Change:
    (change,) = await store.apply([env])
    assert isinstance(change, Change)
    return change


async def test_first_message_creates_the_record(store: RedisStore) -> None:
    op = new_id()
    change = await apply_one(store, envelope(op, State.PENDING))
    assert change.outcome is ApplyOutcome.APPLIED
    record = change.record
    assert record is not None
    assert (record.id, record.user_id, record.state, record.version) == (op, USER, State.PENDING, 1)
    assert change.cursor is not None
    assert await store.get(op) == record


async def test_pending_step_with_a_new_name_is_a_change(store: RedisStore) -> None:
    op = new_id()
    await apply_one(store, envelope(op, State.PENDING, "create_order"))
    same = await apply_one(store, envelope(op, State.PENDING, "create_order"))
    step = await apply_one(store, envelope(op, State.PENDING, "add_parcel_to_order"))
    assert same.outcome is ApplyOutcome.STALE
    assert step.outcome is ApplyOutcome.APPLIED
    assert step.record is not None
    assert (step.record.name, step.record.version) == ("add_parcel_to_order", 2)


async def test_first_terminal_state_wins(store: RedisStore) -> None:
    op = new_id()
    done = await apply_one(store, envelope(op, State.COMPLETED, "order_created"))
    late_command = await apply_one(store, envelope(op, State.PENDING))
    late_rejection = await apply_one(
        store, envelope(op, State.REJECTED, "create_order_rejected", code="x", reason="y")
    )
    assert done.outcome is ApplyOutcome.APPLIED
    assert late_command.outcome is ApplyOutcome.STALE
    assert late_rejection.outcome is ApplyOutcome.STALE
    record = await store.get(op)
    assert record is not None
    assert (record.state, record.version, record.code) == (State.COMPLETED, 1, None)


async def test_rejection_keeps_code_and_reason(store: RedisStore) -> None:
    op = new_id()
    await apply_one(store, envelope(op, State.PENDING))
    change = await apply_one(
        store,
        envelope(op, State.REJECTED, "create_order_rejected", code="no_stock", reason="gone"),
    )
    assert change.record is not None
    assert (change.record.state, change.record.code, change.record.reason) == (
        State.REJECTED,
        "no_stock",
        "gone",
    )


async def test_duplicate_message_id_changes_nothing(store: RedisStore) -> None:
    op = new_id()
    first = envelope(op, State.PENDING, message_id="m-1")
    await apply_one(store, first)
    again = await apply_one(store, envelope(op, State.COMPLETED, "order_created", message_id="m-1"))
    assert again.outcome is ApplyOutcome.DUPLICATE
    record = await store.get(op)
    assert record is not None
    assert (record.state, record.version) == (State.PENDING, 1)
    assert len(await store.history(op)) == 1


async def test_history_lists_every_applied_change_in_order(store: RedisStore) -> None:
    op = new_id()
    await store.apply(
        [
            envelope(op, State.PENDING, "create_order", message_id="a"),
            envelope(op, State.PENDING, "create_order", message_id="b"),
            envelope(op, State.PENDING, "add_parcel_to_order", message_id="c"),
            envelope(op, State.COMPLETED, "order_approved", message_id="d"),
        ]
    )
    history = await store.history(op)
    assert [(h["version"], h["state"], h["name"], h["messageId"]) for h in history] == [
        (1, "pending", "create_order", "a"),
        (2, "pending", "add_parcel_to_order", "c"),
        (3, "completed", "order_approved", "d"),
    ]
    assert all(h["at"].endswith("Z") for h in history)


async def test_every_key_expires_after_the_last_update(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    short = RedisStore(redis_client, ttl_seconds=1, keys=Keys("t"))
    op = new_id()
    await apply_one(short, envelope(op, State.PENDING, message_id="m-1"))
    for key, lifetimes in _operation_keys(short, op).items():
        assert 0 < await redis_client.pttl(key) <= 1_000 * lifetimes, key
    await asyncio.sleep(1.2)
    assert await short.get(op) is None
    assert await short.history(op) == []
    page = await short.page(ListQuery(user_id=USER))
    assert page.items == []


async def test_reads_do_not_extend_the_ttl(store: RedisStore, redis_client: aioredis.Redis) -> None:
    op = new_id()
    await apply_one(store, envelope(op, State.PENDING))
    await redis_client.expire(store.keys.record(op), 5)
    await store.get(op)
    await store.history(op)
    assert await redis_client.ttl(store.keys.record(op)) <= 5


def _operation_keys(store: RedisStore, op: str) -> dict[bytes | str, int]:
    """The keys an operation's change writes, with how many lifetimes each lives: the owner's
    index and the owners set live two, so that the sweep finds them."""
    keys = store.keys
    shard = keys.shard(op)
    return {
        keys.record(op): 1,
        keys.user_index(USER, shard): 2,
        keys.index(shard): 1,
        keys.owners(shard): 2,
    }


async def _age(redis_client: aioredis.Redis, keys: list[bytes | str], left_ms: int) -> None:
    """As if time had passed: every key has only ``left_ms`` to live."""
    for key in keys:
        assert await redis_client.pexpire(key, left_ms), key


async def test_each_applied_change_restarts_the_expiry(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    op = new_id()
    await apply_one(store, envelope(op, State.PENDING, "create_order"))
    keys = _operation_keys(store, op)
    for key, lifetimes in keys.items():
        assert 59_000 * lifetimes < await redis_client.pttl(key) <= 60_000 * lifetimes, key
    for change in (
        envelope(op, State.PENDING, "add_parcel_to_order"),
        envelope(op, State.COMPLETED, "order_created"),
    ):
        await _age(redis_client, list(keys), 5_000)
        assert (await apply_one(store, change)).outcome is ApplyOutcome.APPLIED
        for key, lifetimes in keys.items():
            assert 59_000 * lifetimes < await redis_client.pttl(key) <= 60_000 * lifetimes, key


async def test_stale_and_duplicate_messages_leave_the_expiry_alone(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    op = new_id()
    await apply_one(store, envelope(op, State.PENDING, "create_order", message_id="m-1"))
    keys = _operation_keys(store, op)
    await _age(redis_client, list(keys), 5_000)
    late = [
        envelope(op, State.COMPLETED, "order_created", message_id="m-1"),  # duplicate
        envelope(op, State.PENDING, "create_order", message_id="m-2"),  # same step: stale
    ]
    assert [(await apply_one(store, env)).outcome for env in late] == [
        ApplyOutcome.DUPLICATE,
        ApplyOutcome.STALE,
    ]
    await apply_one(store, envelope(op, State.COMPLETED, "order_created", message_id="m-3"))
    await _age(redis_client, list(keys), 5_000)
    for env in (
        envelope(op, State.REJECTED, "create_order_rejected", message_id="m-4"),  # finished
        envelope(op, State.PENDING, "add_parcel_to_order", message_id="m-3"),  # duplicate
    ):
        assert (await apply_one(store, env)).outcome is not ApplyOutcome.APPLIED
    for key in keys:
        assert 0 < await redis_client.pttl(key) <= 5_000, key
    fields = await redis_client.hkeys(store.keys.record(op))
    assert {as_text(f) for f in fields if as_text(f).startswith("m:")} == {
        "m:m-1",
        "m:m-2",
        "m:m-3",
        "m:m-4",
    }


async def test_ids_seen_are_kept_in_the_record_and_expire_with_it(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    """A stale message's id is remembered in the record, which keeps its own expiry."""
    op = new_id()
    await apply_one(store, envelope(op, State.COMPLETED, "order_created", message_id=""))
    await redis_client.pexpire(store.keys.record(op), 5_000)
    stale = await apply_one(store, envelope(op, State.PENDING, message_id="late"))
    assert stale.outcome is ApplyOutcome.STALE
    assert 0 < await redis_client.pttl(store.keys.record(op)) <= 5_000
    assert await redis_client.hexists(store.keys.record(op), message_field("late"))
    again = await apply_one(store, envelope(op, State.PENDING, message_id="late"))
    assert again.outcome is ApplyOutcome.DUPLICATE
    record = await store.get(op)
    assert record is not None and record.version == 1


async def test_stale_and_duplicate_leave_the_stream_alone(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    op = new_id()
    await apply_one(store, envelope(op, State.COMPLETED, "order_created", message_id="x"))
    await apply_one(store, envelope(op, State.COMPLETED, "order_created", message_id="x"))
    await apply_one(store, envelope(op, State.PENDING))
    assert await redis_client.xlen(store.keys.changes(0)) == 1


async def test_listing_is_newest_first_with_filters_and_a_cursor(store: RedisStore) -> None:
    ops = []
    for index in range(7):
        op = new_id()
        ops.append(op)
        state = State.COMPLETED if index % 2 else State.PENDING
        await apply_one(store, envelope(op, state, f"n{index % 3}"))
    other = new_id()
    await apply_one(store, envelope(other, State.PENDING, user="someone-else"))

    assert await _pages(store, ListQuery(user_id=USER, limit=3)) == list(reversed(ops))

    completed = await store.page(ListQuery(user_id=USER, state=State.COMPLETED))
    assert {r.id for r in completed.items} == {ops[1], ops[3], ops[5]}
    named = await store.page(ListQuery(user_id=USER, name="n0"))
    assert {r.id for r in named.items} == {ops[0], ops[3], ops[6]}
    everyone = await store.page(ListQuery(user_id=None))
    assert everyone.items[0].id == other and len(everyone.items) == 8


async def _pages(store: RedisStore, query: ListQuery) -> list[str]:
    seen: list[str] = []
    while True:
        page = await store.page(query)
        assert len(page.items) <= query.limit
        seen.extend(record.id for record in page.items)
        if page.next is None:
            return seen
        query = replace(query, cursor=page.next)


async def test_listing_merges_the_shards_in_one_total_order(
    redis_client: aioredis.Redis,
) -> None:
    store = RedisStore(redis_client, ttl_seconds=60, keys=Keys("t5", Shards(5)))
    ops = [new_id() for _ in range(41)]
    for start in range(0, len(ops), 8):  # batches: many changes share a millisecond
        changes = await store.apply([envelope(op, State.PENDING) for op in ops[start : start + 8]])
        assert all(isinstance(c, Change) and c.outcome is ApplyOutcome.APPLIED for c in changes)
    assert len({store.keys.shard(op) for op in ops}) == 5

    # The expected order, from what Redis holds: rank descending, then shard, then the index's
    # own order for equal ranks (member descending).
    ranks: dict[str, int] = {}
    for op in ops:
        rank = await redis_client.zscore(store.keys.index(store.keys.shard(op)), op)
        assert rank is not None
        ranks[op] = int(rank)
    expected = sorted(ops, reverse=True)
    expected.sort(key=lambda op: (-ranks[op], store.keys.shard(op)))
    assert len(set(ranks.values())) < len(ops), "some ranks are equal across shards"
    for limit in (1, 3, 7, 50):
        assert await _pages(store, ListQuery(user_id=USER, limit=limit)) == expected
        assert await _pages(store, ListQuery(user_id=None, limit=limit)) == expected

    # Expired records are skipped and pruned from their shard's index; nothing else is lost.
    gone = set(expected[2:30:3])
    for op in gone:
        await redis_client.delete(store.keys.record(op))
    left = [op for op in expected if op not in gone]
    assert await _pages(store, ListQuery(user_id=USER, limit=4)) == left
    assert await _pages(store, ListQuery(user_id=USER, limit=4)) == left
    for op in gone:
        index = store.keys.user_index(USER, store.keys.shard(op))
        assert await redis_client.zscore(index, op) is None


async def test_the_owner_is_filled_in_by_a_later_message(store: RedisStore) -> None:
    op = new_id()
    await apply_one(store, envelope(op, State.PENDING, user=None))
    change = await apply_one(store, envelope(op, State.COMPLETED, "order_created"))
    assert change.record is not None and change.record.user_id == USER
    page = await store.page(ListQuery(user_id=USER))
    assert [r.id for r in page.items] == [op]


async def test_concurrent_appliers_never_regress(
    servers: tuple[str, str], redis_client: aioredis.Redis
) -> None:
    """Four clients race the same messages of one operation; exactly one completion applies."""
    stores = [
        RedisStore(aioredis.Redis.from_url(servers[1]), ttl_seconds=60, keys=Keys("t"))
        for _ in range(4)
    ]
    op = new_id()
    messages = [envelope(op, State.PENDING, f"step{i}", message_id=f"p{i}") for i in range(20)]
    messages.append(envelope(op, State.COMPLETED, "done", message_id="done"))
    results = await asyncio.gather(*(s.apply(messages) for s in stores))
    applied_completions = sum(
        1
        for changes in results
        for change in changes
        if isinstance(change, Change)
        and change.outcome is ApplyOutcome.APPLIED
        and change.record is not None
        and change.record.state is State.COMPLETED
    )
    assert applied_completions == 1
    history = await stores[0].history(op)
    versions = [h["version"] for h in history]
    assert versions == list(range(1, len(history) + 1))
    assert history[-1]["state"] == "completed"
    for s in stores:
        await s.close()


async def test_a_batch_survives_a_flushed_script_cache(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    """After SCRIPT FLUSH (a Redis restart without its cache) every command of the batch gets
    NOSCRIPT; the store loads the script again and applies the whole batch, once."""
    await apply_one(store, envelope(new_id(), State.PENDING))
    await redis_client.script_flush()
    ops = [new_id() for _ in range(30)]
    changes = await store.apply([envelope(op, State.PENDING) for op in ops])
    assert [c.outcome for c in changes if isinstance(c, Change)] == [ApplyOutcome.APPLIED] * 30
    for op in ops:
        record = await store.get(op)
        assert record is not None and record.version == 1


async def test_a_refused_command_mid_batch_leaves_the_connection_in_step(
    store: RedisStore, redis_client: aioredis.Redis
) -> None:
    """Replies are read off the connection in order: an error reply in the middle of a batch
    stands in for its own command only, and whatever is sent next gets its own replies."""
    ops = [new_id() for _ in range(40)]
    refused = {ops[3], ops[17], ops[39]}
    for op in refused:
        await redis_client.set(store.keys.record(op), "not a hash")  # WRONGTYPE
    for _ in range(3):  # and again, on the same pooled connection
        changes = await store.apply([envelope(op, State.PENDING) for op in ops])
        for op, change in zip(ops, changes, strict=True):
            if op in refused:
                assert not isinstance(change, Change)
                assert "WRONGTYPE" in change.reason
            else:
                assert isinstance(change, Change) and change.operation_id == op
        record = await store.get(ops[0])
        assert record is not None and record.id == ops[0] and record.version == 1


async def test_a_connection_killed_between_batches_costs_one_retry_at_most(
    servers: tuple[str, str], redis_client: aioredis.Redis
) -> None:
    store = RedisStore(aioredis.Redis.from_url(servers[1]), ttl_seconds=60, keys=Keys("t"))
    try:
        await apply_one(store, envelope(new_id(), State.PENDING))
        killed = await store.redis.client_id()
        assert await redis_client.client_kill_filter(_id=str(killed)) == 1
        ops = [new_id() for _ in range(10)]
        batch = [envelope(op, State.PENDING) for op in ops]
        try:
            changes = await store.apply(batch)
        except StoreUnavailable:
            changes = await store.apply(batch)
        assert all(isinstance(c, Change) and c.outcome is ApplyOutcome.APPLIED for c in changes)
        assert [await store.get(op) is not None for op in ops] == [True] * 10
        assert await store.redis.client_id() != killed
    finally:
        await store.close()
