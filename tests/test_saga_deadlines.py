"""Saga deadlines, against the memory and the Redis store: a deadline rejects and compensates once,
a finished saga leaves the deadlines, the order maker's deadline cancels the order, and a
deadline survives a restart."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from operations.sagas import Processed, RedisSagaStore, SagaOutcome, SagaStatus
from operations.sagas.deadlines import DeadlineWatcher
from tests.sagas_support import Harness, snapshot, start_trip, step_trip
from tests.sample_sagas import FAR_FUTURE, JOURNAL, TripSaga
from tests.support import new_id

pytestmark = pytest.mark.usefixtures("journal")


async def test_a_deadline_rejects_and_compensates_once(h: Harness) -> None:
    trip = new_id()
    t0 = time.time()
    rejected_before = h.metrics.sagas.value(saga="trip", outcome="deadline_exceeded")
    await start_trip(h, trip, deadlineIn=60, now=t0)
    await step_trip(h, trip, "flight_booked")
    assert (await h.record("trip", trip)).deadline == t0 + 60

    assert await h.store.due(t0 + 59) == []
    assert await h.store.due(t0 + 60) == [("trip", trip)]
    watcher = DeadlineWatcher(h.coordinator)
    assert await watcher.sweep(now=t0 + 59) == 0
    assert await h.coordinator.expire("trip", trip, now=t0 + 30) == Processed(
        "trip", trip, SagaOutcome.HANDLED
    )
    assert (await h.record("trip", trip)).status is SagaStatus.PENDING
    published = len(h.publisher.published)
    JOURNAL[trip].clear()

    assert await watcher.sweep(now=t0 + 61) == 1

    record = await h.record("trip", trip)
    assert record.status is SagaStatus.REJECTED
    assert record.code == "deadline_exceeded"
    assert record.reason == "the saga did not finish before its deadline"
    assert JOURNAL[trip] == [
        "undo:flight_booked",
        "undone:flight_booked",
        "undo:trip_requested",
        "undone:trip_requested",
        "on_rejected:deadline_exceeded",
    ]
    assert h.publisher.since(published) == ["cancel_flight", "cancel_trip", "trip_rejected"]
    assert h.metrics.sagas.value(saga="trip", outcome="deadline_exceeded") == rejected_before + 1
    assert await h.store.due(FAR_FUTURE) == []

    before = await snapshot(h, "trip", trip)
    assert await watcher.sweep(now=t0 + 3600) == 0
    assert await h.coordinator.expire("trip", trip, now=t0 + 3600) == Processed(
        "trip", trip, SagaOutcome.FINISHED
    )
    result = await h.send("hotel_booked", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, SagaOutcome.FINISHED)]
    assert await snapshot(h, "trip", trip) == before
    assert h.publisher.since(published) == ["cancel_flight", "cancel_trip", "trip_rejected"]


async def test_a_finished_saga_leaves_the_deadlines(h: Harness) -> None:
    trip = new_id()
    t0 = time.time()
    await start_trip(h, trip, deadlineIn=60, now=t0)
    assert await h.store.due(FAR_FUTURE) == [("trip", trip)]
    await h.send("trip_confirmed", correlation_id=trip, message_id=new_id())
    assert await h.store.due(FAR_FUTURE) == []
    assert await DeadlineWatcher(h.coordinator).sweep(now=FAR_FUTURE) == 0
    assert (await h.record("trip", trip)).status is SagaStatus.COMPLETED


async def test_the_order_maker_deadline_cancels_the_order(h: Harness) -> None:
    saga_id, order = new_id(), new_id()
    await h.send(
        "make_order",
        {"orderId": order, "customerId": "c1", "parcelIds": ["p1"]},
        correlation_id=saga_id,
        message_id=new_id(),
    )
    record = await h.record("order_making", saga_id)
    assert record.deadline is not None
    assert record.deadline == pytest.approx(time.time() + 120, abs=10)
    result = await h.coordinator.expire("order_making", saga_id, now=record.deadline + 1)
    assert result == Processed("order_making", saga_id, SagaOutcome.REJECTED)
    assert h.publisher.names == ["create_order", "cancel_order", "make_order_rejected"]
    reason = "the saga did not finish before its deadline"
    assert h.publisher.published[1].body == {
        "orderId": order,
        "reason": reason,
        "code": "deadline_exceeded",
    }
    assert h.publisher.published[2].body == h.publisher.published[1].body
    assert (await h.record("order_making", saga_id)).status is SagaStatus.REJECTED


async def test_a_deadline_survives_a_restart(
    redis_client: aioredis.Redis, second_redis: aioredis.Redis
) -> None:
    before = Harness.build(RedisSagaStore(redis_client, prefix="t"), [TripSaga])
    trip = new_id()
    t0 = time.time()
    await start_trip(before, trip, deadlineIn=5, now=t0)
    await step_trip(before, trip, "flight_booked")

    after = Harness.build(RedisSagaStore(second_redis, prefix="t"), [TripSaga])
    assert await after.store.due(t0 + 10) == [("trip", trip)]
    assert await DeadlineWatcher(after.coordinator).sweep(now=t0 + 10) == 1

    for harness in (before, after):
        record = await harness.record("trip", trip)
        assert (record.status, record.code) == (SagaStatus.REJECTED, "deadline_exceeded")
    assert after.publisher.names == ["cancel_flight", "cancel_trip", "trip_rejected"]
    assert before.publisher.names == ["book_flight", "book_hotel"]
    assert await DeadlineWatcher(before.coordinator).sweep(now=t0 + 20) == 0
    assert await DeadlineWatcher(after.coordinator).sweep(now=t0 + 20) == 0
