"""The saga coordinator's step semantics, against the memory and the Redis store (contract §7): a
start message creates the saga, steps run in order, completion finishes it and a finished saga
ignores what comes later; messages no saga takes, early messages, duplicates, and one message
driving several sagas."""

from __future__ import annotations

import logging

import pytest

from operations.sagas import Processed, SagaContext, SagaMessage, SagaOutcome, SagaStatus, SagaStore
from operations.states import State
from tests.sagas_support import Calls, Harness, nothing_stored, snapshot, start_trip, step_trip
from tests.sample_sagas import FAR_FUTURE, JOURNAL, InvoiceSaga, TripSaga
from tests.support import new_id

pytestmark = pytest.mark.usefixtures("journal")


async def test_start_creates_steps_run_in_order_and_complete_finishes(h: Harness) -> None:
    trip = new_id()
    completed = Calls()
    result = await h.coordinator.process(
        SagaMessage("trip_requested", {"traveller": "ann"}, new_id()),
        SagaContext(trip, {"Name": "trip_requested"}),
        on_completed=completed,
    )
    assert result == [Processed("trip", trip, SagaOutcome.HANDLED)]
    loaded = await h.load("trip", trip)
    assert loaded.version == 1
    assert loaded.record.status is SagaStatus.PENDING
    assert loaded.record.correlation_id == trip
    assert loaded.record.data["traveller"] == "ann"

    await step_trip(h, trip, "flight_booked", "note_added", "hotel_booked")
    record = await h.record("trip", trip)
    assert record.status is SagaStatus.PENDING
    assert record.data["done"] == ["trip_requested", "flight_booked", "note_added", "hotel_booked"]
    assert [entry.message for entry in record.steps] == record.data["done"]

    result = await h.coordinator.process(
        SagaMessage("trip_confirmed", {}, new_id()), SagaContext(trip), on_completed=completed
    )
    assert result == [Processed("trip", trip, SagaOutcome.COMPLETED)]
    assert completed.seen == [("trip_confirmed", trip)]
    loaded = await h.load("trip", trip)
    assert loaded.version == 5
    assert loaded.record.status is SagaStatus.COMPLETED
    assert loaded.record.reason is None and loaded.record.code is None
    assert not any(entry.compensated for entry in loaded.record.steps)
    assert h.publisher.names == ["book_flight", "book_hotel", "book_car", "trip_completed"]
    assert [m.saga for m in h.publisher.published] == [State.PENDING] * 3 + [State.COMPLETED]
    assert {m.correlation_id for m in h.publisher.published} == {trip}

    before = await snapshot(h, "trip", trip)
    for name in ("hotel_booked", "trip_refused", "trip_crashed", "trip_confirmed"):
        result = await h.send(name, {"reason": "late"}, correlation_id=trip, message_id=new_id())
        assert result == [Processed("trip", trip, SagaOutcome.FINISHED)], name
    assert await snapshot(h, "trip", trip) == before
    assert len(h.publisher.published) == 4
    assert await h.store.pending(FAR_FUTURE) == []
    assert h.metrics.sagas.value(saga="trip", outcome="ignored_finished") == 4
    assert h.metrics.sagas.value(saga="trip", outcome="completed") == 1
    assert h.metrics.sagas.value(saga="trip", outcome="handled") == 4
    assert JOURNAL[trip] == [
        "do:trip_requested",
        "do:flight_booked",
        "do:note_added",
        "do:hotel_booked",
        "do:trip_confirmed",
    ]


async def test_a_start_message_for_a_finished_saga_changes_nothing(h: Harness) -> None:
    trip = new_id()
    await start_trip(h, trip)
    await step_trip(h, trip)
    result = await h.send("trip_confirmed", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, SagaOutcome.COMPLETED)]
    before = await snapshot(h, "trip", trip)
    published = len(h.publisher.published)
    result = await h.send("trip_requested", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, SagaOutcome.FINISHED)]
    assert await snapshot(h, "trip", trip) == before
    assert len(h.publisher.published) == published


async def test_a_message_no_saga_has_a_step_for_or_without_an_id_drives_nothing(
    h: Harness,
) -> None:
    assert await h.send("parcel_lost", correlation_id=new_id(), message_id=new_id()) == []
    assert await h.send("trip_requested", correlation_id=None, message_id=new_id()) == []
    assert await h.send("trip_requested", correlation_id="", message_id=new_id()) == []
    await nothing_stored(h.store)
    assert h.publisher.published == []


async def test_a_finished_saga_ignoring_a_message_is_logged_and_counted(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    trip = new_id()
    await start_trip(h, trip)
    await h.send("trip_refused", correlation_id=trip, message_id=new_id())
    with caplog.at_level(logging.INFO, logger="operations.sagas"):
        result = await h.send("hotel_booked", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, SagaOutcome.FINISHED)]
    ignored = [r for r in caplog.records if r.name == "operations.sagas"]
    assert [r.getMessage() for r in ignored] == [
        f"saga trip:{trip} is rejected; ignoring hotel_booked"
    ]
    assert ignored[0].levelno == logging.INFO
    assert getattr(ignored[0], "correlation_id", None) == trip
    assert h.metrics.sagas.value(saga="trip", outcome="ignored_finished") == 1


async def test_an_early_message_is_reported_and_handled_once_the_saga_exists(h: Harness) -> None:
    trip = new_id()
    early = new_id()
    result = await h.send("flight_booked", correlation_id=trip, message_id=early)
    assert result == [Processed("trip", trip, SagaOutcome.EARLY)]
    assert await h.store.load("trip", trip) is None
    await nothing_stored(h.store)
    assert h.publisher.published == []
    assert h.metrics.sagas.value(saga="trip", outcome="early") == 1

    await start_trip(h, trip)
    result = await h.send("flight_booked", correlation_id=trip, message_id=early)
    assert result == [Processed("trip", trip, SagaOutcome.HANDLED)]
    record = await h.record("trip", trip)
    assert record.data["done"] == ["trip_requested", "flight_booked"]
    assert record.steps[-1].message_id == early
    assert h.publisher.names == ["book_flight", "book_hotel"]


async def test_the_same_message_id_twice_is_a_duplicate(h: Harness) -> None:
    trip = new_id()
    first, second = new_id(), new_id()
    assert await h.send("trip_requested", correlation_id=trip, message_id=first) == [
        Processed("trip", trip, SagaOutcome.HANDLED)
    ]
    assert await h.send("flight_booked", correlation_id=trip, message_id=second) == [
        Processed("trip", trip, SagaOutcome.HANDLED)
    ]
    before = await snapshot(h, "trip", trip)
    for name, message_id in (("trip_requested", first), ("flight_booked", second)):
        assert await h.send(name, correlation_id=trip, message_id=message_id) == [
            Processed("trip", trip, SagaOutcome.DUPLICATE)
        ]
    assert await snapshot(h, "trip", trip) == before
    assert h.publisher.names == ["book_flight", "book_hotel"]
    assert JOURNAL[trip] == ["do:trip_requested", "do:flight_booked"]
    assert h.metrics.sagas.value(saga="trip", outcome="duplicate") == 2


async def test_a_duplicate_of_the_rejecting_message_does_not_compensate_again(h: Harness) -> None:
    trip = new_id()
    refusal = new_id()
    await start_trip(h, trip)
    result = await h.send("trip_refused", correlation_id=trip, message_id=refusal)
    assert result == [Processed("trip", trip, SagaOutcome.REJECTED)]
    before = await snapshot(h, "trip", trip)
    published = len(h.publisher.published)
    result = await h.send("trip_refused", correlation_id=trip, message_id=refusal)
    # The saga has finished: that is what is reported (before any duplicate check).
    assert result == [Processed("trip", trip, SagaOutcome.FINISHED)]
    assert await snapshot(h, "trip", trip) == before
    assert len(h.publisher.published) == published
    assert JOURNAL[trip].count("undone:trip_requested") == 1


async def test_one_message_drives_every_saga_with_a_step_for_it(store: SagaStore) -> None:
    h = Harness.build(store, [TripSaga, InvoiceSaga])
    trip, account = new_id(), new_id()
    result = await h.send(
        "trip_requested",
        {"traveller": "ann", "account": account},
        correlation_id=trip,
        message_id=new_id(),
    )
    assert result == [
        Processed("trip", trip, SagaOutcome.HANDLED),
        Processed("invoice", account, SagaOutcome.HANDLED),
    ]
    assert (await h.record("trip", trip)).data["done"] == ["trip_requested"]
    assert (await h.record("invoice", account)).data["lines"] == ["ann"]
    assert sorted(h.publisher.names) == ["book_flight", "open_invoice"]

    result = await h.send(
        "trip_confirmed", {"account": account}, correlation_id=trip, message_id=new_id()
    )
    assert result == [
        Processed("trip", trip, SagaOutcome.COMPLETED),
        Processed("invoice", account, SagaOutcome.COMPLETED),
    ]
    # Without the account, the invoice saga does not take the message at all.
    other = new_id()
    result = await h.send("trip_requested", correlation_id=other, message_id=new_id())
    assert result == [Processed("trip", other, SagaOutcome.HANDLED)]
