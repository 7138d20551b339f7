"""Compensation in the saga coordinator, against the memory and the Redis store (contract §7): a
rejection or a failing step undoes the completed steps strictly in reverse; a compensation that
keeps failing stops there (compensation_failed), one that fails once is retried; a rejected saga
is visibly compensating until its compensations finish, and one left by a dead process is
resumed; a failing rejection hook still ends the saga."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from operations.sagas import Processed, SagaContext, SagaMessage, SagaOutcome, SagaStatus, SagaStore
from operations.sagas.deadlines import DeadlineWatcher
from operations.states import State
from tests.sagas_support import Calls, Harness, snapshot, start_trip, step_trip, until_blocked
from tests.sample_sagas import FAR_FUTURE, GATES, JOURNAL, GrumpyTripSaga, TripSaga
from tests.support import new_id

pytestmark = pytest.mark.usefixtures("journal")


async def refuse_for_want_of_a_visa(h: Harness, trip: str, rejected: Calls) -> list[Processed]:
    """The coordinator handed the trip's refusal (no visa), with ``rejected`` as its hook."""
    return await h.coordinator.process(
        SagaMessage("trip_refused", {"reason": "no visa", "code": "visa_refused"}, new_id()),
        SagaContext(trip),
        on_rejected=rejected,
    )


async def test_rejection_compensates_completed_steps_strictly_in_reverse(h: Harness) -> None:
    trip = new_id()
    rejected = Calls()
    await start_trip(h, trip)
    await step_trip(h, trip, "flight_booked", "note_added", "hotel_booked")
    published = len(h.publisher.published)
    JOURNAL[trip].clear()

    result = await refuse_for_want_of_a_visa(h, trip, rejected)

    assert result == [Processed("trip", trip, SagaOutcome.REJECTED)]
    assert JOURNAL[trip] == [
        "do:trip_refused",
        "undo:hotel_booked",
        "undone:hotel_booked",
        "undo:flight_booked",
        "undone:flight_booked",
        "undo:trip_requested",
        "undone:trip_requested",
        "on_rejected:visa_refused",
    ]
    assert rejected.seen == [("trip_refused", trip)]
    record = await h.record("trip", trip)
    assert record.status is SagaStatus.REJECTED
    assert (record.reason, record.code) == ("no visa", "visa_refused")
    assert record.data["undone"] == ["hotel_booked", "flight_booked", "trip_requested"]
    assert record.data["rejections"] == ["visa_refused: no visa"]
    flags = [(entry.message, entry.compensated, entry.compensation_error) for entry in record.steps]
    assert flags == [
        ("trip_requested", True, None),
        ("flight_booked", True, None),
        ("note_added", True, None),  # nothing to undo: passed over
        ("hotel_booked", True, None),
        ("trip_refused", False, None),  # the rejecting step itself is not compensated
    ]
    assert h.publisher.since(published) == [
        "cancel_hotel",
        "cancel_flight",
        "cancel_trip",
        "trip_rejected",
    ]
    assert {m.saga for m in h.publisher.published[published:]} == {State.REJECTED}
    assert h.publisher.published[-1].body == {
        "trip": trip,
        "reason": "no visa",
        "code": "visa_refused",
    }
    assert h.metrics.sagas.value(saga="trip", outcome="rejected") == 1
    assert await h.store.pending(FAR_FUTURE) == []


async def test_only_the_steps_completed_so_far_are_compensated(h: Harness) -> None:
    trip = new_id()
    await start_trip(h, trip)
    await step_trip(h, trip, "note_added")
    JOURNAL[trip].clear()
    published = len(h.publisher.published)
    result = await h.send(
        "trip_refused", {"reason": "changed plans"}, correlation_id=trip, message_id=new_id()
    )
    assert result == [Processed("trip", trip, SagaOutcome.REJECTED)]
    assert JOURNAL[trip] == [
        "do:trip_refused",
        "undo:trip_requested",
        "undone:trip_requested",
        "on_rejected:None",
    ]
    assert h.publisher.since(published) == ["cancel_trip", "trip_rejected"]
    record = await h.record("trip", trip)
    assert (record.status, record.reason, record.code) == (
        SagaStatus.REJECTED,
        "changed plans",
        None,
    )


async def test_an_exception_in_a_step_rejects_compensates_and_drops_its_messages(
    h: Harness,
) -> None:
    trip = new_id()
    rejected = Calls()
    await start_trip(h, trip)
    await step_trip(h, trip, "flight_booked")
    published = len(h.publisher.published)
    JOURNAL[trip].clear()

    result = await h.coordinator.process(
        SagaMessage("trip_crashed", {}, new_id()), SagaContext(trip), on_rejected=rejected
    )

    assert result == [Processed("trip", trip, SagaOutcome.REJECTED)]
    assert rejected.seen == [("trip_crashed", trip)]
    assert JOURNAL[trip] == [
        "do:trip_crashed",
        "undo:flight_booked",
        "undone:flight_booked",
        "undo:trip_requested",
        "undone:trip_requested",
        "on_rejected:step_failed",
    ]
    assert h.publisher.since(published) == ["cancel_flight", "cancel_trip", "trip_rejected"]
    assert "should_never_leave" not in h.publisher.names
    assert await h.store.pending(FAR_FUTURE) == []
    record = await h.record("trip", trip)
    assert record.status is SagaStatus.REJECTED
    assert record.code == "step_failed"
    assert record.reason == "step trip_crashed failed: boom"
    assert [(e.message, e.compensated) for e in record.steps] == [
        ("trip_requested", True),
        ("flight_booked", True),
        ("trip_crashed", False),
    ]


async def test_a_compensation_that_keeps_failing_stops_the_compensation_there(h: Harness) -> None:
    trip = new_id()
    rejected = Calls()
    await start_trip(h, trip, broken="flight_booked")
    await step_trip(h, trip, "flight_booked", "hotel_booked")
    published = len(h.publisher.published)
    JOURNAL[trip].clear()

    result = await refuse_for_want_of_a_visa(h, trip, rejected)

    assert result == [Processed("trip", trip, SagaOutcome.COMPENSATION_FAILED)]
    assert rejected.seen == [("trip_refused", trip)]
    assert JOURNAL[trip] == [
        "do:trip_refused",
        "undo:hotel_booked",
        "undone:hotel_booked",
        "undo:flight_booked",  # three attempts, each failing
        "undo:flight_booked",
        "undo:flight_booked",
        "on_rejected:visa_refused",  # and trip_requested is never undone
    ]
    record = await h.record("trip", trip)
    assert record.status is SagaStatus.COMPENSATION_FAILED
    assert (record.reason, record.code) == ("no visa", "visa_refused")
    assert record.data["undone"] == ["hotel_booked"]
    flags = [(entry.message, entry.compensated, entry.compensation_error) for entry in record.steps]
    assert flags == [
        ("trip_requested", False, None),
        ("flight_booked", False, "RuntimeError: cannot undo flight_booked"),
        ("hotel_booked", True, None),
        ("trip_refused", False, None),
    ]
    # What the failed attempts queued is dropped; what succeeded, and the hook's event, leave.
    assert h.publisher.since(published) == ["cancel_hotel", "trip_rejected"]
    assert h.metrics.sagas.value(saga="trip", outcome="compensation_failed") == 1

    # The saga is finished: nothing more happens to it.
    before = await snapshot(h, "trip", trip)
    result = await h.send("trip_refused", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, SagaOutcome.FINISHED)]
    assert await snapshot(h, "trip", trip) == before


async def test_a_compensation_that_fails_once_is_retried_and_sends_once(h: Harness) -> None:
    trip = new_id()
    await start_trip(h, trip, flaky="flight_booked")
    await step_trip(h, trip, "flight_booked")
    published = len(h.publisher.published)
    JOURNAL[trip].clear()
    result = await h.send("trip_refused", {"reason": "r"}, correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, SagaOutcome.REJECTED)]
    assert JOURNAL[trip] == [
        "do:trip_refused",
        "undo:flight_booked",
        "undo:flight_booked",
        "undone:flight_booked",
        "undo:trip_requested",
        "undone:trip_requested",
        "on_rejected:None",
    ]
    assert h.publisher.since(published) == ["cancel_flight", "cancel_trip", "trip_rejected"]
    record = await h.record("trip", trip)
    assert record.status is SagaStatus.REJECTED
    assert all(entry.compensation_error is None for entry in record.steps)


async def test_a_rejected_saga_is_visibly_compensating_until_its_compensations_finish(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    trip = new_id()
    await start_trip(h, trip)
    await step_trip(h, trip, "flight_booked", "note_added", "hotel_booked")
    published = len(h.publisher.published)
    gate = GATES[trip, "flight_booked"] = asyncio.Event()
    refusal = asyncio.create_task(
        h.send(
            "trip_refused",
            {"reason": "no visa", "code": "visa_refused"},
            correlation_id=trip,
            message_id=new_id(),
        )
    )
    await until_blocked(trip, "flight_booked")

    # Seen from outside while the second compensation is held: compensating, with the reason,
    # the first compensation committed (and its message sent), the older steps not yet undone.
    record = await h.record("trip", trip)
    assert record.status is SagaStatus.COMPENSATING
    assert (record.reason, record.code) == ("no visa", "visa_refused")
    assert [(e.message, e.compensated) for e in record.steps] == [
        ("trip_requested", False),
        ("flight_booked", False),
        ("note_added", False),
        ("hotel_booked", True),
        ("trip_refused", False),
    ]
    assert record.data["undone"] == ["hotel_booked"]
    assert h.publisher.since(published) == ["cancel_hotel"]
    assert [r.id for r in await h.store.recent(status=SagaStatus.COMPENSATING)] == [trip]
    assert await h.store.recent(status=SagaStatus.PENDING) == []
    counts = await h.store.counts()
    assert counts["trip", SagaStatus.COMPENSATING] == 1
    assert counts["trip", SagaStatus.PENDING] == 0

    # A message meanwhile is too late: ignored, logged and counted, and it changes nothing.
    before = await snapshot(h, "trip", trip)
    with caplog.at_level(logging.INFO, logger="operations.sagas"):
        result = await h.send("trip_confirmed", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, SagaOutcome.COMPENSATING)]
    assert f"saga trip:{trip} is compensating; ignoring trip_confirmed" in caplog.messages
    assert h.metrics.sagas.value(saga="trip", outcome="ignored_compensating") == 1
    assert await snapshot(h, "trip", trip) == before
    # The compensation is moving: no deadline sweep takes it over.
    assert await DeadlineWatcher(h.coordinator).sweep() == 0

    gate.set()
    assert await asyncio.wait_for(refusal, 10) == [Processed("trip", trip, SagaOutcome.REJECTED)]
    record = await h.record("trip", trip)
    assert record.status is SagaStatus.REJECTED
    assert record.data["undone"] == ["hotel_booked", "flight_booked", "trip_requested"]
    assert all(e.compensated for e in record.steps[:-1])
    assert h.publisher.since(published) == [
        "cancel_hotel",
        "cancel_flight",
        "cancel_trip",
        "trip_rejected",
    ]
    assert await h.store.recent(status=SagaStatus.COMPENSATING) == []
    assert [r.id for r in await h.store.recent(status=SagaStatus.REJECTED)] == [trip]
    counts = await h.store.counts()
    assert (counts["trip", SagaStatus.COMPENSATING], counts["trip", SagaStatus.REJECTED]) == (0, 1)
    assert await h.store.due(FAR_FUTURE) == []


async def test_a_compensation_left_by_a_dead_process_is_resumed_by_the_deadline_watcher(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    trip = new_id()
    await start_trip(h, trip)
    await step_trip(h, trip, "flight_booked", "hotel_booked")
    GATES[trip, "flight_booked"] = asyncio.Event()
    refusal = asyncio.create_task(
        h.send("trip_refused", {"reason": "r", "code": "c"}, correlation_id=trip, message_id="x")
    )
    await until_blocked(trip, "flight_booked")
    refusal.cancel()  # the process dies in the middle of the compensation
    with contextlib.suppress(asyncio.CancelledError):
        await refusal
    del GATES[trip, "flight_booked"]

    record = await h.record("trip", trip)
    assert record.status is SagaStatus.COMPENSATING
    assert record.resume_at is not None
    assert record.resume_at == pytest.approx(time.time() + 30, abs=10)
    assert await h.store.due(record.resume_at - 1) == []
    assert await h.store.due(record.resume_at) == [("trip", trip)]

    # Another process: nothing to do while the compensation may still be moving, then it
    # resumes where the dead one stopped (the hotel is not cancelled twice).
    other = Harness.build(h.store, [TripSaga])
    watcher = DeadlineWatcher(other.coordinator)
    assert await watcher.sweep(now=record.resume_at - 1) == 0
    assert await other.coordinator.expire("trip", trip, now=record.resume_at - 1) == Processed(
        "trip", trip, SagaOutcome.HANDLED
    )
    assert (await other.record("trip", trip)).status is SagaStatus.COMPENSATING
    with caplog.at_level(logging.WARNING, logger="operations.sagas"):
        assert await watcher.sweep(now=record.resume_at + 1) == 1
    assert f"saga trip:{trip}: resuming a compensation left unfinished" in caplog.messages
    assert other.metrics.sagas.value(saga="trip", outcome="compensation_resumed") == 1

    record = await other.record("trip", trip)
    assert (record.status, record.code) == (SagaStatus.REJECTED, "c")
    assert record.data["undone"] == ["hotel_booked", "flight_booked", "trip_requested"]
    assert JOURNAL[trip].count("undone:hotel_booked") == 1
    assert JOURNAL[trip].count("undo:flight_booked") == 2  # the dead attempt, then the resumed one
    assert h.publisher.names[-1] == "cancel_hotel"
    assert other.publisher.names == ["cancel_flight", "cancel_trip", "trip_rejected"]
    assert await h.store.due(FAR_FUTURE) == []
    assert await watcher.sweep(now=FAR_FUTURE) == 0


async def test_a_compensation_that_keeps_failing_ends_compensation_failed_with_one_commit_each(
    h: Harness,
) -> None:
    trip = new_id()
    await start_trip(h, trip, broken="trip_requested")
    await step_trip(h, trip, "flight_booked")
    assert (await h.load("trip", trip)).version == 2
    result = await h.send("trip_refused", {"reason": "r"}, correlation_id=trip, message_id="x")
    assert result == [Processed("trip", trip, SagaOutcome.COMPENSATION_FAILED)]
    loaded = await h.load("trip", trip)
    # The rejecting step (compensating), flight_booked's compensation, then the ending.
    assert loaded.version == 5
    assert loaded.record.status is SagaStatus.COMPENSATION_FAILED
    assert loaded.record.resume_at is None
    assert [(e.compensated, e.compensation_error) for e in loaded.record.steps] == [
        (False, "RuntimeError: cannot undo trip_requested"),
        (True, None),
        (False, None),
    ]
    assert [r.id for r in await h.store.recent(status=SagaStatus.COMPENSATION_FAILED)] == [trip]
    assert (await h.store.counts())["trip", SagaStatus.COMPENSATION_FAILED] == 1


async def test_a_failing_on_rejected_hook_still_ends_the_saga_and_sends_nothing_of_its_own(
    store: SagaStore, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness.build(store, [GrumpyTripSaga])
    trip = new_id()
    await h.send("trip_requested", correlation_id=trip, message_id=new_id())
    with caplog.at_level(logging.ERROR, logger="operations.sagas"):
        result = await h.send("trip_refused", {"reason": "r"}, correlation_id=trip)
    assert result == [Processed("grumpy", trip, SagaOutcome.REJECTED)]
    assert f"saga grumpy:{trip}: on_rejected failed" in caplog.messages
    record = await h.record("grumpy", trip)
    assert record.status is SagaStatus.REJECTED
    assert h.publisher.names == ["book_flight", "cancel_trip"]
    assert await store.due(FAR_FUTURE) == []
