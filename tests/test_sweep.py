"""The sweep against a real Redis: expired operations and finished sagas leave every sorted set
that names them, live ones stay (those updated late included), listings keep their order and
cursors, and a finished saga's tombstone stops a redelivered start for its horizon."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from operations.metrics import Registry
from operations.sagas import MemorySagaStore, Processed, RedisSagaStore, SagaOutcome, SagaStore
from operations.sagas.records import SagaStatus
from operations.states import State
from operations.store.keys import Keys, unpack_id
from operations.store.listing import ListQuery
from operations.store.redis_store import RedisStore
from operations.store.shards import Shards
from operations.store.sweeper import Sweeper
from tests.sagas_support import FakePublisher, Harness, delete_prefix, start_trip, step_trip
from tests.sample_sagas import TripSaga
from tests.support import as_text, eventually, new_id
from tests.test_store import USER, apply_one, envelope

OTHER = "7f0b2c1e-0000-4000-8000-000000000002"


@pytest.fixture
async def short(redis_client: aioredis.Redis) -> AsyncIterator[RedisStore]:
    """Operations that live two seconds, over three shards."""
    yield RedisStore(
        redis_client, ttl_seconds=2, stream_max_length=1_000, keys=Keys("t", Shards(3))
    )


@pytest.fixture
def lasting(short: RedisStore) -> RedisStore:
    """The same keys, for changes that live a minute: what it updates outlives the tests'
    waits by far, however slow the machine."""
    return RedisStore(short.redis, ttl_seconds=60, stream_max_length=1_000, keys=short.keys)


async def members(client: aioredis.Redis, pattern: str) -> dict[str, set[bytes]]:
    """Every sorted set or set under ``pattern`` with its members, as stored."""
    found: dict[str, set[bytes]] = {}
    async for key in client.scan_iter(match=pattern, count=500):
        kind = as_text(await client.type(key))
        if kind == "zset":
            values: Any = await client.zrange(key, 0, -1)
        elif kind == "set":
            values = await client.smembers(key)
        else:
            continue
        found[key.decode()] = set(values)
    return found


async def indexed_operations(client: aioredis.Redis, store: RedisStore) -> set[str]:
    ids: set[str] = set()
    for key, values in (await members(client, "t:*")).items():
        if key.endswith(":owners"):
            continue  # owners, not operations
        ids |= {unpack_id(value) for value in values}  # a GUID is kept as its 16 bytes
    return ids


async def test_expired_operations_leave_every_index_and_live_ones_stay(
    short: RedisStore, lasting: RedisStore, redis_client: aioredis.Redis
) -> None:
    # Both spellings: a GUID (kept as 16 bytes in the indexes) and an id kept as text.
    expiring = [str(uuid.uuid4()) if index % 2 else new_id() for index in range(30)]
    late = [str(uuid.uuid4()) if index % 2 else new_id() for index in range(5)]
    no_owner = new_id()
    await short.apply(
        [
            *(
                envelope(op, State.PENDING, user=USER if index % 2 else OTHER)
                for index, op in enumerate(expiring + late)
            ),
            envelope(no_owner, State.PENDING, user=None),
        ]
    )
    # Updated later, by another user than some owners: they outlive their creation rank.
    await lasting.apply([envelope(op, State.COMPLETED, "order_created", user=USER) for op in late])
    assert await short.sweep() == 0  # nothing has expired yet
    await asyncio.sleep(2.2)
    assert [await short.get(op) for op in expiring] == [None] * len(expiring)

    # A shard that saw no late update has let its indexes expire whole; the others are swept.
    assert 0 < await short.sweep() <= len(expiring) + 1
    assert await indexed_operations(redis_client, short) == set(late)
    listed = [await short.page(ListQuery(user_id=user)) for user in (USER, OTHER, None)]
    mine, others, everyone = ([record.id for record in page.items] for page in listed)
    assert sorted(mine + others) == sorted(late) == sorted(everyone)
    assert await short.sweep() == 0


async def test_an_owner_set_later_is_swept_from_the_owners_index(
    short: RedisStore, lasting: RedisStore, redis_client: aioredis.Redis
) -> None:
    op = new_id()
    await apply_one(short, envelope(op, State.PENDING, user=None))
    await apply_one(short, envelope(op, State.COMPLETED, "order_created", user=USER))
    shard = short.keys.shard(op)
    assert await redis_client.zscore(short.keys.user_index(USER, shard), op) is not None
    assert await redis_client.zscore(short.keys.user_index("", shard), op) is None
    owners: Any = await redis_client.zrange(short.keys.owners(shard), 0, -1)
    assert set(owners) == {b"", USER.encode()}
    keeper = neighbour(short, op)  # keeps the shard's indexes from expiring whole
    await apply_one(lasting, envelope(keeper, State.PENDING, user=USER))
    await asyncio.sleep(2.2)
    assert await short.sweep() == 1
    assert await indexed_operations(redis_client, short) == {keeper}


def neighbour(store: RedisStore, op: str) -> str:
    """A new operation id in the same shard as ``op``."""
    while True:
        other = new_id()
        if store.keys.shard(other) == store.keys.shard(op):
            return other


async def test_listing_keeps_order_and_cursor_while_the_sweep_runs_between_pages(
    redis_client: aioredis.Redis,
) -> None:
    """Newest first, no live operation lost or repeated, whatever the sweep removes between two
    pages (over three shards)."""
    keys = Keys("t", Shards(3))
    short = RedisStore(redis_client, ttl_seconds=2, stream_max_length=1_000, keys=keys)
    # The kept ones are updated by a store whose operations live a minute: no race with time.
    lasting = RedisStore(redis_client, ttl_seconds=60, stream_max_length=1_000, keys=keys)
    ops = [new_id() for _ in range(40)]
    await short.apply([envelope(op, State.PENDING) for op in ops])
    kept = ops[::3]
    await lasting.apply([envelope(op, State.COMPLETED, "order_created") for op in kept])
    everything = await short.page(ListQuery(user_id=USER, limit=100))
    order = [record.id for record in everything.items]  # newest first, ties by shard
    assert sorted(order) == sorted(ops)
    first = await short.page(ListQuery(user_id=USER, limit=5))
    assert [record.id for record in first.items] == order[:5]
    await asyncio.sleep(2.2)
    assert 0 < await short.sweep() <= len(ops) - len(kept)
    assert await indexed_operations(redis_client, short) == set(kept)
    rest: list[str] = []
    cursor = first.next
    while cursor is not None:
        page = await short.page(ListQuery(user_id=USER, limit=3, cursor=cursor))
        rest.extend(record.id for record in page.items)
        cursor = page.next
    assert rest == [op for op in order[5:] if op in kept]


@pytest.mark.slow
async def test_the_indexes_stay_flat_under_steady_traffic(
    short: RedisStore, redis_client: aioredis.Redis
) -> None:
    """Operations keep coming for three lifetimes; after each sweep, every member of every set
    names a live operation."""
    started = time.monotonic()
    live_counts = []
    while time.monotonic() - started < 6.5:
        batch = [new_id() for _ in range(20)]
        for op in batch:
            await apply_one(short, envelope(op, State.PENDING))
            await apply_one(short, envelope(op, State.COMPLETED, "order_created"))
        await asyncio.sleep(0.25)
        await short.sweep()
        indexed = await indexed_operations(redis_client, short)
        live = {op for op in indexed if await short.get(op) is not None}
        # Up to a second of expiry may pass between the sweep and the reads above.
        assert len(indexed - live) <= 20 * 5, len(indexed - live)
        live_counts.append(len(indexed))
    assert max(live_counts[-8:]) <= 20 * 12  # about two seconds' worth, never everything sent


async def test_the_sweeper_takes_one_pass_per_interval_across_processes(
    short: RedisStore, lasting: RedisStore, redis_client: aioredis.Redis
) -> None:
    metrics = [Registry(), Registry()]
    sweepers = [Sweeper(redis_client, short, None, m, every=5) for m in metrics]
    op = new_id()
    await apply_one(short, envelope(op, State.PENDING))
    await apply_one(lasting, envelope(neighbour(short, op), State.PENDING))
    await asyncio.sleep(2.2)
    results = [await sweeper._pass() for sweeper in sweepers]
    assert results[1] is None  # the other process holds this interval's lease
    assert results[0] is not None and results[0].operations == 1
    assert metrics[0].swept.value(what="operation") == 1
    assert 0 < await redis_client.pttl(sweepers[0].lease_key) <= 4_500


@pytest.fixture(params=["memory", "redis"])
def tombstoning(request: pytest.FixtureRequest) -> SagaStore:
    if request.param == "memory":
        return MemorySagaStore(tombstone_seconds=3)
    client: aioredis.Redis = request.getfixturevalue("redis_client")
    return RedisSagaStore(client, prefix="t", shards=Shards(2), tombstone_seconds=3)


def finishing(store: SagaStore) -> Harness:
    """Sagas kept one second after they finish."""
    h = Harness.build(store, [TripSaga], FakePublisher())
    h.coordinator.finished_ttl_seconds = 1
    return h


async def finished_trip(h: Harness) -> str:
    trip = new_id()
    await start_trip(h, trip)
    await h.send("trip_confirmed", {}, correlation_id=trip, message_id=new_id())
    return trip


async def test_a_finished_saga_leaves_the_indexes_and_its_tombstone_stops_a_second_start(
    tombstoning: SagaStore, redis_client: aioredis.Redis, journal: Any
) -> None:
    h = finishing(tombstoning)
    trip, running = new_id(), new_id()
    await start_trip(h, trip)
    await step_trip(h, trip, "flight_booked")
    assert await h.send("trip_confirmed", {}, correlation_id=trip, message_id=new_id()) == [
        Processed("trip", trip, SagaOutcome.COMPLETED)
    ]
    await start_trip(h, running)
    await asyncio.sleep(1.1)
    assert await tombstoning.load("trip", trip) is None
    swept = await tombstoning.sweep()
    assert (swept.sagas, swept.tombstones) == (1, 0)
    assert [record.id for record in await tombstoning.recent()] == [running]
    if isinstance(tombstoning, RedisSagaStore):
        sets = await members(redis_client, "t:*")
        named = {v.decode() for k, values in sets.items() if "tombstones" not in k for v in values}
        assert named == {"trip", f"trip:{running}"}  # the types set, and the running saga

    published = len(h.publisher.published)
    again = await h.send(
        "trip_requested", {"traveller": "ann"}, correlation_id=trip, message_id=new_id()
    )
    assert again == [Processed("trip", trip, SagaOutcome.TOMBSTONED)]
    assert await tombstoning.load("trip", trip) is None
    assert len(h.publisher.published) == published
    assert h.metrics.sagas.value(saga="trip", outcome="ignored_tombstoned") == 1

    await asyncio.sleep(2.0)  # past the three-second horizon
    assert (await tombstoning.sweep()).tombstones == 1
    assert not await tombstoning.tombstoned("trip", trip)
    await start_trip(h, trip)  # a start long after: a new saga
    assert (await h.record("trip", trip)).status is SagaStatus.PENDING


async def test_a_tombstone_is_checked_in_the_commit_itself(
    redis_client: aioredis.Redis, journal: Any
) -> None:
    """Even a writer that did not look first cannot create a saga over a fresh tombstone."""
    store = RedisSagaStore(redis_client, prefix="t", tombstone_seconds=60)
    h = finishing(store)
    trip = await finished_trip(h)
    finished = await h.record("trip", trip)
    await redis_client.delete(store.keys.saga(finished.key))  # as if it had expired
    finished.status = SagaStatus.PENDING
    assert not await store.commit(finished, 0, [], 1)
    assert await store.load("trip", trip) is None


async def test_without_a_horizon_no_tombstone_is_kept(
    redis_client: aioredis.Redis, journal: Any
) -> None:
    store = RedisSagaStore(redis_client, prefix="t", tombstone_seconds=0)
    trip = await finished_trip(finishing(store))
    assert not await store.tombstoned("trip", trip)
    assert await redis_client.exists(store.keys.tombstones(store.shards.of(f"trip:{trip}"))) == 0
    await delete_prefix(redis_client, "t")


async def test_a_tombstone_outlives_the_saga_it_stands_for(
    redis_client: aioredis.Redis, journal: Any
) -> None:
    """A horizon shorter than the saga's own time to live is stretched to it."""
    store = RedisSagaStore(redis_client, prefix="t", tombstone_seconds=1)
    h = Harness.build(store, [TripSaga], FakePublisher())
    h.coordinator.finished_ttl_seconds = 30
    trip = await finished_trip(h)
    member = f"trip:{trip}"
    until = await redis_client.zscore(store.keys.tombstones(store.shards.of(member)), member)
    assert until is not None and until >= time.time() + 29


async def test_the_sweeper_sweeps_by_itself(
    redis_client: aioredis.Redis, short: RedisStore, lasting: RedisStore
) -> None:
    metrics = Registry()
    sweeper = Sweeper(redis_client, short, None, metrics, every=0.3)
    op = new_id()
    await apply_one(short, envelope(op, State.PENDING))
    await apply_one(lasting, envelope(neighbour(short, op), State.PENDING))
    await sweeper.start()
    try:
        await eventually(lambda: _swept(metrics), "the expired operation to be swept", timeout=6)
    finally:
        await sweeper.stop()
    assert op not in await indexed_operations(redis_client, short)


async def _swept(metrics: Registry) -> bool:
    return metrics.swept.value(what="operation") == 1


async def test_ids_indexed_under_an_earlier_layout_are_left_to_their_ttl(
    redis_client: aioredis.Redis, short: RedisStore, lasting: RedisStore
) -> None:
    """No migration: an id some earlier version indexed without its owner's index is neither
    read nor removed by the sweeper, whose pass is seen to run (it sweeps an expired one)."""
    op = new_id()
    await apply_one(short, envelope(op, State.PENDING))
    await apply_one(lasting, envelope(neighbour(short, op), State.PENDING))
    index = short.keys.index(short.keys.shard(op))
    await redis_client.zadd(index, {"earlier": 1})
    metrics = Registry()
    sweeper = Sweeper(redis_client, short, None, metrics, every=0.3)
    await sweeper.start()
    try:
        await eventually(lambda: _swept(metrics), "the expired operation to be swept", timeout=6)
    finally:
        await sweeper.stop()
    assert await redis_client.zscore(index, "earlier") == 1
    assert op not in await indexed_operations(redis_client, short)
    assert await redis_client.keys("t:legacy*") == []


async def test_a_cursor_whose_own_entry_is_removed_loses_nothing(
    redis_client: aioredis.Redis,
) -> None:
    """The entry a cursor stopped at may be swept before the next page is read."""
    store = RedisStore(
        redis_client, ttl_seconds=60, stream_max_length=1_000, keys=Keys("t", Shards(3))
    )
    ops = [new_id() for _ in range(30)]
    await store.apply([envelope(op, State.PENDING) for op in ops])
    order = [r.id for r in (await store.page(ListQuery(user_id=USER, limit=100))).items]
    listed: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.page(ListQuery(user_id=USER, limit=4, cursor=cursor))
        listed.extend(record.id for record in page.items)
        if page.next is None:
            break
        cursor = page.next
        last = page.items[-1].id  # gone before the next page is read, as if swept
        shard = store.keys.shard(last)
        await redis_client.delete(store.keys.record(last))
        await redis_client.zrem(store.keys.user_index(USER, shard), last)
        await redis_client.zrem(store.keys.index(shard), last)
    assert listed == order


async def test_one_sweep_goes_on_past_its_batch_until_every_expired_operation_is_gone(
    short: RedisStore, lasting: RedisStore, redis_client: aioredis.Redis
) -> None:
    expiring = [new_id() for _ in range(450)]  # over a hundred (a page) in each shard
    await short.apply([envelope(op, State.PENDING, user=USER) for op in expiring])
    keepers = {neighbour(short, op) for op in expiring[:3]}  # keep each shard's indexes alive
    await lasting.apply([envelope(op, State.PENDING, user=OTHER) for op in keepers])
    await asyncio.sleep(2.2)
    assert await short.sweep(batch=4) == len(expiring)
    assert await indexed_operations(redis_client, short) == keepers
    assert await short.sweep(batch=4) == 0
