"""The sagas' outbox, against the memory and the Redis store: what a step publishes carries the
correlation id, the saga's original context and its state; the state commits while the broker
is down and the outbox waits, then resends only what was not confirmed, in commit order; a
losing commit publishes nothing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from operations.amqp.publisher import OutgoingMessage
from operations.sagas import SagaStatus, SagaStore
from operations.sagas import outbox as outbox_module
from operations.sagas.outbox import OutboxRelay, step_context
from operations.sagas.records import OutboxEntry
from operations.states import State
from tests.sagas_support import (
    FakePublisher,
    Harness,
    make_order,
    start_trip,
    step_trip,
)
from tests.sample_sagas import FAR_FUTURE, TripSaga
from tests.support import new_id

pytestmark = pytest.mark.usefixtures("journal")


async def test_published_messages_carry_the_correlation_id_context_and_saga_state(
    h: Harness,
) -> None:
    trip = new_id()
    context = {
        "CorrelationId": trip,
        "Name": "trip_requested",
        "TraceId": "t-1",
        "User": {"Id": "u-1", "IsAuthenticated": True},
    }
    await h.send(
        "trip_requested",
        {"traveller": "ann"},
        correlation_id=trip,
        message_id=new_id(),
        message_context=context,
    )
    # A later message comes with another context: the saga keeps the original one.
    await h.send(
        "flight_booked",
        correlation_id=trip,
        message_id=new_id(),
        message_context={"Name": "flight_booked", "User": {"Id": "someone-else"}},
    )
    await h.send("trip_refused", {"reason": "r", "code": "c"}, correlation_id=trip)

    original = {key: value for key, value in context.items() if key != "Name"}
    first, second = h.publisher.published[:2]
    assert first == OutgoingMessage(
        exchange="trips",
        routing_key="book_flight",
        body={"trip": trip, "traveller": "ann"},
        correlation_id=trip,
        message_id=first.message_id,
        message_context={**original, "name": "book_flight"},
        saga=State.PENDING,
        trace_context={},
    )
    assert first.message_context == step_context(context, "book_flight")
    assert second.message_context == {**original, "name": "book_hotel"}
    assert h.publisher.names == [
        "book_flight",
        "book_hotel",
        "cancel_flight",
        "cancel_trip",
        "trip_rejected",
    ]
    for message in h.publisher.published:
        assert message.correlation_id == trip
        assert message.message_context == {**original, "name": message.routing_key}
    assert [m.saga for m in h.publisher.published[2:]] == [State.REJECTED] * 3
    ids = [m.message_id for m in h.publisher.published]
    assert len(set(ids)) == len(ids)
    assert h.metrics.saga_messages_published.value(message="book_flight") == 1


async def test_when_the_broker_fails_the_state_commits_and_the_outbox_waits(
    h: Harness, no_retry_delay: None
) -> None:
    trip = new_id()
    h.publisher.failing = True
    await start_trip(h, trip)
    await step_trip(h, trip, "flight_booked")

    loaded = await h.load("trip", trip)
    assert (loaded.version, loaded.record.status) == (2, SagaStatus.PENDING)
    assert loaded.record.data["done"] == ["trip_requested", "flight_booked"]
    assert h.publisher.published == []
    assert h.metrics.saga_publish_failures.value() == 2
    (pending,) = await h.store.pending(FAR_FUTURE)
    assert (pending.saga_name, pending.saga_id) == ("trip", trip)
    assert [entry.message for _, entry in pending.entries] == ["book_flight", "book_hotel"]
    assert {entry.correlation_id for _, entry in pending.entries} == {trip}
    waiting = [entry.message_id for _, entry in pending.entries]

    assert await h.relay.flush() == 0  # still down
    assert h.publisher.published == []

    h.publisher.recover()
    assert await h.relay.flush() == 1
    assert h.publisher.names == ["book_flight", "book_hotel"]
    assert [m.message_id for m in h.publisher.published] == waiting
    assert [m.saga for m in h.publisher.published] == [State.PENDING, State.PENDING]
    assert await h.store.pending(FAR_FUTURE) == []
    assert await h.relay.flush() == 0
    assert len(h.publisher.published) == 2


async def test_a_partly_confirmed_outbox_resends_only_the_rest(
    h: Harness, no_retry_delay: None
) -> None:
    saga_id, order = new_id(), new_id()
    await h.send(
        "make_order",
        {"orderId": order, "customerId": "c1", "parcelIds": ["p1", "p2", "p3"]},
        correlation_id=saga_id,
        message_id=new_id(),
    )
    h.publisher.fail_after = 1
    await h.send("order_created", {"orderId": order}, correlation_id=saga_id, message_id=new_id())
    assert h.publisher.names == ["create_order", "add_parcel_to_order"]
    (pending,) = await h.store.pending(FAR_FUTURE)
    assert [entry.body["parcelId"] for _, entry in pending.entries] == ["p2", "p3"]

    h.publisher.recover()
    assert await h.relay.flush() == 1
    added = h.publisher.named("add_parcel_to_order")
    assert [m.body["parcelId"] for m in added] == ["p1", "p2", "p3"]
    assert len({m.message_id for m in h.publisher.published}) == 4
    assert await h.store.pending(FAR_FUTURE) == []


async def test_a_sagas_messages_leave_in_commit_order(h: Harness, no_retry_delay: None) -> None:
    """The broker comes back between two commits: what is still in the outbox from the first
    must not be overtaken by what the second publishes (a saga's outbox is in commit order)."""
    trip = new_id()
    h.publisher.failing = True
    await start_trip(h, trip)
    h.publisher.recover()
    await step_trip(h, trip, "flight_booked")
    await h.relay.flush()
    assert h.publisher.names == ["book_flight", "book_hotel"]
    assert await h.store.pending(FAR_FUTURE) == []


async def test_cancel_order_does_not_overtake_create_order(
    h: Harness, no_retry_delay: None
) -> None:
    """create_order is still in the outbox (the broker was down) when the deadline compensates:
    cancel_order sent before create_order would leave the order created for good."""
    saga_id, order = new_id(), new_id()
    h.publisher.failing = True
    await make_order(h, saga_id, order, ["p1"])
    h.publisher.recover()
    record = await h.record("order_making", saga_id)
    assert record.deadline is not None
    await h.coordinator.expire("order_making", saga_id, now=record.deadline + 1)
    await h.relay.flush()
    assert h.publisher.names == ["create_order", "cancel_order", "make_order_rejected"]


async def test_a_losing_commit_publishes_nothing(h: Harness, no_retry_delay: None) -> None:
    trip = new_id()
    await start_trip(h, trip)
    loaded = await h.load("trip", trip)

    def entry(name: str) -> OutboxEntry:
        return OutboxEntry(new_id(), "trips", name, {"trip": trip}, State.PENDING, trip, {})

    assert await h.store.commit(loaded.record, loaded.version, [entry("winner")], 60) is True
    assert await h.store.commit(loaded.record, loaded.version, [entry("loser")], 60) is False
    assert (await h.load("trip", trip)).version == loaded.version + 1
    (pending,) = await h.store.pending(FAR_FUTURE)
    assert [e.message for _, e in pending.entries] == ["winner"]
    assert await h.relay.flush() == 1
    assert h.publisher.names == ["book_flight", "winner"]


@dataclass
class SlowPublisher(FakePublisher):
    """A broker that takes ``delay`` seconds to confirm each message."""

    delay: float = 0.0

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(self.delay)
        await super().publish(*args, **kwargs)


async def test_an_outbox_longer_than_a_lease_is_sent_once_in_order(
    store: SagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending it takes longer than the lease: the sender starts no message it could not see
    confirmed within its lease, so a second sender taking the lease over never sends one again."""
    monkeypatch.setattr(outbox_module, "LEASE_SECONDS", 0.5)
    monkeypatch.setattr(outbox_module, "CONFIRM_SECONDS", 0.2)
    publisher = SlowPublisher(delay=0.06)
    h = Harness.build(store, [TripSaga], publisher)
    trip = new_id()
    await start_trip(h, trip)
    loaded = await h.load("trip", trip)
    names = [f"m{n}" for n in range(15)]  # 0.9 s of confirms, nearly two leases
    entries = [
        OutboxEntry(new_id(), "trips", name, {"trip": trip}, State.PENDING, trip, {})
        for name in names
    ]
    assert await store.commit(loaded.record, loaded.version, entries, 60)

    async def sender() -> None:
        # Two of these at once, as a step's sender and another process's background pass.
        relay = OutboxRelay(store, publisher, h.metrics)
        deadline = time.monotonic() + 20
        while (await store.outbox("trip", trip)).entries:
            assert time.monotonic() < deadline, "the outbox never drained"
            await relay.send("trip", trip)
            await asyncio.sleep(0.01)

    await asyncio.gather(sender(), sender())
    assert publisher.names == ["book_flight", *names]
