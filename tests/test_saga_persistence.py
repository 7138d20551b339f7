"""The saga stores under the coordinator (memory and Redis): counts by status, versions (a step
that loses its commit runs again), two processes on one Redis losing no update, and the time to
live of finished sagas."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from operations.sagas import Processed, RedisSagaStore, SagaOutcome, SagaStatus, SagaStore
from operations.sagas.records import OutboxEntry, SagaRecord
from operations.sagas.store import Loaded, Pending
from tests.sagas_support import Harness, start_trip, step_trip, until_blocked
from tests.sample_sagas import FAR_FUTURE, GATES, JOURNAL, TallySaga, TripSaga
from tests.support import eventually, new_id

pytestmark = pytest.mark.usefixtures("journal")


async def test_the_store_counts_sagas_in_each_status(h: Harness) -> None:
    assert await h.store.counts() == {}
    pending, completed, rejected, failed, compensating = (new_id() for _ in range(5))
    for trip in (pending, completed, rejected, compensating):
        await start_trip(h, trip)
    await start_trip(h, failed, broken="trip_requested")
    await start_trip(h, new_id())
    await h.send("trip_confirmed", correlation_id=completed, message_id=new_id())
    await h.send("trip_refused", correlation_id=rejected, message_id=new_id())
    await h.send("trip_refused", correlation_id=failed, message_id=new_id())
    GATES[compensating, "trip_requested"] = asyncio.Event()
    held = asyncio.create_task(
        h.send("trip_refused", correlation_id=compensating, message_id=new_id())
    )
    await until_blocked(compensating, "trip_requested")
    assert await h.store.counts() == {
        ("trip", SagaStatus.PENDING): 2,
        ("trip", SagaStatus.COMPENSATING): 1,
        ("trip", SagaStatus.COMPLETED): 1,
        ("trip", SagaStatus.REJECTED): 1,
        ("trip", SagaStatus.COMPENSATION_FAILED): 1,
    }
    GATES[compensating, "trip_requested"].set()
    await asyncio.wait_for(held, 10)
    counts = await h.store.counts()
    assert (counts["trip", SagaStatus.COMPENSATING], counts["trip", SagaStatus.REJECTED]) == (0, 2)
    statuses = {r.id: r.status for r in await h.store.recent(status=SagaStatus.PENDING)}
    assert pending in statuses and set(statuses.values()) == {SagaStatus.PENDING}


class RivalStore:
    """Delegates to a store, but lets a rival writer commit just before the coordinator's first
    commit of a step (the saga's version moves on under it)."""

    def __init__(self, store: SagaStore) -> None:
        self.inner = store
        self.rivals = 0
        self.armed = False

    async def load(self, saga_name: str, saga_id: str) -> Loaded | None:
        return await self.inner.load(saga_name, saga_id)

    async def commit(
        self,
        record: SagaRecord,
        expected_version: int,
        outbox: list[OutboxEntry],
        finished_ttl_seconds: int,
    ) -> bool:
        if self.armed:
            self.armed = False
            current = await self.inner.load(record.saga_name, record.id)
            assert current is not None
            assert await self.inner.commit(current.record, current.version, [], 60)
            self.rivals += 1
        return await self.inner.commit(record, expected_version, outbox, finished_ttl_seconds)

    async def pending(self, older_than: float, limit: int = 100) -> list[Pending]:
        return await self.inner.pending(older_than, limit)

    async def acknowledge(self, saga_name: str, saga_id: str, stored: list[str]) -> None:
        await self.inner.acknowledge(saga_name, saga_id, stored)

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        return await self.inner.due(now, limit)

    async def outbox(self, saga_name: str, saga_id: str) -> Pending:
        return await self.inner.outbox(saga_name, saga_id)

    async def lease_outbox(self, saga_name: str, saga_id: str, holder: str, seconds: float) -> bool:
        return await self.inner.lease_outbox(saga_name, saga_id, holder, seconds)

    async def release_outbox(self, saga_name: str, saga_id: str, holder: str) -> None:
        await self.inner.release_outbox(saga_name, saga_id, holder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def tombstoned(self, saga_name: str, saga_id: str) -> bool:
        return await self.inner.tombstoned(saga_name, saga_id)


async def test_a_step_that_loses_a_commit_runs_again_and_only_the_winner_publishes(
    store: SagaStore,
) -> None:
    rival = RivalStore(store)
    h = Harness.build(rival, [TripSaga])
    trip = new_id()
    await start_trip(h, trip)
    rival.armed = True
    await step_trip(h, trip, "flight_booked")
    assert rival.rivals == 1
    assert JOURNAL[trip] == ["do:trip_requested", "do:flight_booked", "do:flight_booked"]
    loaded = await h.load("trip", trip)
    assert loaded.version == 3  # start, rival, step
    assert loaded.record.data["done"] == ["trip_requested", "flight_booked"]
    assert h.publisher.names == ["book_flight", "book_hotel"]
    assert await store.pending(FAR_FUTURE) == []


async def test_two_processes_lose_no_update(
    redis_client: aioredis.Redis, servers: tuple[str, str]
) -> None:
    clients = [aioredis.Redis.from_url(servers[1]) for _ in range(2)]
    try:
        processes = [Harness.build(RedisSagaStore(c, prefix="t"), [TallySaga]) for c in clients]
        tally = new_id()
        opened = await processes[0].send("tally_opened", correlation_id=tally, message_id=new_id())
        assert opened == [Processed("tally", tally, SagaOutcome.HANDLED)]
        messages = {item: new_id() for item in range(50)}

        async def deliver(item: int) -> Processed:
            (result,) = await processes[item % 2].send(
                "tally_item", {"item": item}, correlation_id=tally, message_id=messages[item]
            )
            return result

        # First delivery, all 50 at once: each step is either committed or reported CONFLICT
        # (other writers kept winning), and what is in the data is exactly what was committed.
        results = await asyncio.gather(*(deliver(item) for item in messages))
        assert {result.outcome for result in results} <= {SagaOutcome.HANDLED, SagaOutcome.CONFLICT}
        handled = {
            item for item, r in zip(messages, results, strict=True) if r.outcome == "handled"
        }
        loaded = await processes[0].load("tally", tally)
        assert sorted(loaded.record.data["items"]) == sorted(handled)
        assert loaded.version == 1 + len(handled)

        # A CONFLICT goes back to the queue, as the intake's Retry does, until every one is in.
        waiting = sorted(set(messages) - handled)
        for _ in range(10):
            if not waiting:
                break
            results = await asyncio.gather(*(deliver(item) for item in waiting))
            assert {result.outcome for result in results} <= {
                SagaOutcome.HANDLED,
                SagaOutcome.CONFLICT,
            }
            waiting = [i for i, r in zip(waiting, results, strict=True) if r.outcome == "conflict"]
        assert waiting == []

        loaded = await processes[1].load("tally", tally)
        assert sorted(loaded.record.data["items"]) == list(range(50))
        assert loaded.version == 51
        assert sorted(entry.message_id or "" for entry in loaded.record.steps[1:]) == sorted(
            messages.values()
        )
        published = [m for p in processes for m in p.publisher.published]
        assert sorted(m.body["item"] for m in published) == list(range(50))
        assert len({m.message_id for m in published}) == 50
        assert await processes[0].store.pending(FAR_FUTURE) == []

        # The same message delivered to both processes at once is applied once.
        again = new_id()
        both = await asyncio.gather(
            *(
                p.send("tally_item", {"item": 50}, correlation_id=tally, message_id=again)
                for p in processes
            )
        )
        assert sorted(result.outcome for (result,) in both) == sorted(
            [SagaOutcome.HANDLED, SagaOutcome.DUPLICATE]
        )
        loaded = await processes[0].load("tally", tally)
        assert loaded.record.data["items"].count(50) == 1
        assert loaded.version == 52
    finally:
        for client in clients:
            await client.aclose()


async def test_a_finished_saga_gets_the_configured_time_to_live_in_redis(
    redis_client: aioredis.Redis,
) -> None:
    store = RedisSagaStore(redis_client, prefix="t")
    h = Harness.build(store, [TripSaga])
    h.coordinator.finished_ttl_seconds = 300
    trip = new_id()
    await start_trip(h, trip)
    key = store.keys.saga(f"trip:{trip}")
    assert await redis_client.ttl(key) == -1
    await h.send("trip_confirmed", correlation_id=trip, message_id=new_id())
    assert 0 < await redis_client.ttl(key) <= 300


async def test_finished_sagas_expire_and_running_ones_stay(h: Harness) -> None:
    h.coordinator.finished_ttl_seconds = 1
    done, refused, running = new_id(), new_id(), new_id()
    for trip in (done, refused, running):
        await start_trip(h, trip)
    await h.send("trip_confirmed", correlation_id=done, message_id=new_id())
    await h.send("trip_refused", correlation_id=refused, message_id=new_id())
    assert (await h.record("trip", done)).status is SagaStatus.COMPLETED
    assert (await h.record("trip", refused)).status is SagaStatus.REJECTED
    assert len(await h.store.recent()) == 3

    async def expired() -> bool:
        return await h.store.load("trip", done) is None and (
            await h.store.load("trip", refused) is None
        )

    await eventually(expired, "the finished sagas to expire", timeout=10, every=0.1)
    assert [r.id for r in await h.store.recent()] == [running]
    assert await h.store.recent(status=SagaStatus.COMPLETED) == []
    counts = await h.store.counts()
    assert counts["trip", SagaStatus.PENDING] == 1
    assert counts["trip", SagaStatus.COMPLETED] == counts["trip", SagaStatus.REJECTED] == 0
    assert (await h.record("trip", running)).status is SagaStatus.PENDING
