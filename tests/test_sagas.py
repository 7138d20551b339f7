"""The saga coordinator's behaviour (contract §7), the same contract tests against the memory store
and the Redis store: steps in order, completion, compensation strictly in reverse, failed
compensation, the visible compensating status and its resumption, early messages, duplicates,
deadlines, the outbox, several sagas per message, concurrency across processes, expiry, counts by
status, Pacco's order-maker saga, and the statuses through GET /sagas and GET /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from operations import openapi
from operations.sagas import (
    MemorySagaStore,
    Outcome,
    Processed,
    RedisSagaStore,
    Rejection,
    Saga,
    SagaContext,
    SagaMessage,
    SagaStatus,
    SagaStore,
    compensates,
    start,
    step,
)
from operations.sagas import outbox as outbox_module
from operations.sagas.deadlines import DeadlineWatcher
from operations.sagas.ordermaking import REJECTED_EVENTS, OrderMakingSaga
from operations.sagas.outbox import step_context
from operations.sagas.records import OutboxEntry, SagaRecord
from operations.sagas.store import Loaded, Pending
from operations.settings import Settings
from operations.shards import Shards
from operations.states import State
from tests.sagas_support import Harness, Published
from tests.support import RunningService, eventually

# What the test sagas did, in the order they did it, per saga id: steps ("do:"), each attempt at a
# compensation ("undo:" when it starts, "undone:" when it finishes) and the rejection hook.
JOURNAL: defaultdict[str, list[str]] = defaultdict(list)
FAR_FUTURE = 4_102_444_800.0  # 2100-01-01
# Compensations that wait, per (saga id, step), until the test sets the event.
GATES: dict[tuple[str, str], asyncio.Event] = {}


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class TripData:
    traveller: str = ""
    done: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    broken: str = ""  # the step whose compensation always fails
    flaky: str = ""  # the step whose compensation fails on its first attempt only


class TripSaga(Saga[TripData]):
    """Three compensable steps (trip_requested, flight_booked, hotel_booked), one without a
    compensation (note_added), and ways to finish: confirmed, refused, crashed."""

    name = "trip"
    data_type = TripData

    def _did(self, message: SagaMessage) -> None:
        JOURNAL[self.id].append(f"do:{message.name}")
        self.data.done.append(message.name)

    @start("trip_requested")
    async def requested(self, message: SagaMessage, context: SagaContext) -> None:
        self._did(message)
        self.data.traveller = str(message.get("traveller", ""))
        self.data.broken = str(message.get("broken", ""))
        self.data.flaky = str(message.get("flaky", ""))
        if message.get("deadlineIn") is not None:
            self.set_deadline(float(message.get("deadlineIn")), now=float(message.get("now")))
        self.publish("trips", "book_flight", {"trip": self.id, "traveller": self.data.traveller})

    @compensates("trip_requested")
    async def unrequest(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message, "cancel_trip")

    @step("flight_booked")
    async def flight(self, message: SagaMessage, context: SagaContext) -> None:
        self._did(message)
        self.publish("trips", "book_hotel", {"trip": self.id})

    @compensates("flight_booked")
    async def unflight(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message, "cancel_flight")

    @step("hotel_booked")
    async def hotel(self, message: SagaMessage, context: SagaContext) -> None:
        self._did(message)
        self.publish("trips", "book_car", {"trip": self.id})

    @compensates("hotel_booked")
    async def unhotel(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message, "cancel_hotel")

    @step("note_added")
    async def note(self, message: SagaMessage, context: SagaContext) -> None:
        self._did(message)
        self.data.notes.append(str(message.get("note", "")))

    @step("trip_confirmed")
    async def confirmed(self, message: SagaMessage, context: SagaContext) -> None:
        self._did(message)
        self.publish("trips", "trip_completed", {"trip": self.id}, saga_state=State.COMPLETED)
        self.complete()

    @step("trip_refused")
    async def refused(self, message: SagaMessage, context: SagaContext) -> None:
        self._did(message)
        self.reject(str(message.get("reason")), message.get("code"))

    @step("trip_crashed")
    async def crashed(self, message: SagaMessage, context: SagaContext) -> None:
        self._did(message)
        self.publish("trips", "should_never_leave", {"trip": self.id})
        raise RuntimeError("boom")

    async def _undo(self, message: SagaMessage, reply: str) -> None:
        JOURNAL[self.id].append(f"undo:{message.name}")
        gate = GATES.get((self.id, message.name))
        if gate is not None:
            await gate.wait()  # held here until the test opens the gate
        # Queue first, then fail: a failed attempt's messages must not leave.
        self.publish("trips", reply, {"trip": self.id}, saga_state=State.REJECTED)
        await asyncio.sleep(0.001)  # gives any concurrently running compensation a turn
        if self.data.broken == message.name:
            raise RuntimeError(f"cannot undo {message.name}")
        if self.data.flaky == message.name and JOURNAL[self.id].count(f"undo:{message.name}") == 1:
            raise RuntimeError(f"{message.name} is flaky")
        JOURNAL[self.id].append(f"undone:{message.name}")
        self.data.undone.append(message.name)

    async def on_rejected(self, rejection: Rejection, context: SagaContext) -> None:
        JOURNAL[self.id].append(f"on_rejected:{rejection.code}")
        self.data.rejections.append(f"{rejection.code}: {rejection.reason}")
        self.publish(
            "trips",
            "trip_rejected",
            {"trip": self.id, "reason": rejection.reason, "code": rejection.code},
            saga_state=State.REJECTED,
        )


@dataclass
class InvoiceData:
    lines: list[str] = field(default_factory=list)


class InvoiceSaga(Saga[InvoiceData]):
    """A second saga driven by trip_requested, keyed by the account in the body."""

    name = "invoice"
    data_type = InvoiceData

    def resolve_id(self, message: SagaMessage, context: SagaContext) -> str | None:
        account = message.get("account")
        return account if isinstance(account, str) else None

    @start("trip_requested")
    async def requested(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.lines.append(str(message.get("traveller")))
        self.publish("billing", "open_invoice", {"account": self.id})

    @step("trip_confirmed")
    async def confirmed(self, message: SagaMessage, context: SagaContext) -> None:
        self.complete()


@dataclass
class TallyData:
    items: list[int] = field(default_factory=list)


class TallySaga(Saga[TallyData]):
    """Counts items: every tally_item step adds one to the saga's data (lost updates show)."""

    name = "tally"
    data_type = TallyData

    @start("tally_opened")
    async def opened(self, message: SagaMessage, context: SagaContext) -> None:
        pass

    @step("tally_item")
    async def item(self, message: SagaMessage, context: SagaContext) -> None:
        item = int(message.get("item"))
        self.data.items.append(item)
        await asyncio.sleep(0)  # let the other "process" interleave between load and commit
        self.publish("tally", "item_counted", {"item": item})


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def journal() -> Iterator[defaultdict[str, list[str]]]:
    JOURNAL.clear()
    GATES.clear()
    yield JOURNAL
    JOURNAL.clear()
    for gate in GATES.values():
        gate.set()
    GATES.clear()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> SagaStore:
    if request.param == "memory":
        return MemorySagaStore()
    client: aioredis.Redis = request.getfixturevalue("redis_client")
    return RedisSagaStore(client, prefix="t")


@pytest.fixture
def h(store: SagaStore) -> Harness:
    return Harness.build(store, [TripSaga, OrderMakingSaga])


@pytest.fixture
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay's flush picks up outboxes left unconfirmed for 2 s; here, at once."""
    monkeypatch.setattr(outbox_module, "RETRY_AFTER_SECONDS", 0.0)


@pytest.fixture
async def second_redis(servers: tuple[str, str]) -> AsyncIterator[aioredis.Redis]:
    """Another client on the same Redis, as another process (or the same one, restarted) has."""
    client = aioredis.Redis.from_url(servers[1])
    yield client
    await client.aclose()


@dataclass
class Calls:
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    async def __call__(self, message: SagaMessage, context: SagaContext) -> None:
        self.seen.append((message.name, context.correlation_id))


async def snapshot(h: Harness, saga: str, saga_id: str) -> tuple[int, dict[str, Any]]:
    loaded = await h.load(saga, saga_id)
    return loaded.version, loaded.record.to_json()


async def start_trip(h: Harness, trip: str, **body: Any) -> None:
    assert await h.send(
        "trip_requested", {"traveller": "ann", **body}, correlation_id=trip, message_id=new_id()
    ) == [Processed("trip", trip, Outcome.HANDLED)]


async def step_trip(h: Harness, trip: str, *names: str) -> None:
    for name in names:
        result = await h.send(name, {"note": name}, correlation_id=trip, message_id=new_id())
        assert result == [Processed("trip", trip, Outcome.HANDLED)], name


async def nothing_stored(store: SagaStore) -> None:
    assert await store.pending(FAR_FUTURE) == []
    assert await store.due(FAR_FUTURE) == []
    if isinstance(store, RedisSagaStore):
        assert await store.redis.keys("t:*") == []
    else:
        assert isinstance(store, MemorySagaStore)
        assert store.sagas == {}


# ------------------------------------------------------------ 1. start, steps, completion, finished


async def test_start_creates_steps_run_in_order_and_complete_finishes(h: Harness) -> None:
    trip = new_id()
    completed = Calls()
    result = await h.coordinator.process(
        SagaMessage("trip_requested", {"traveller": "ann"}, new_id()),
        SagaContext(trip, {"Name": "trip_requested"}),
        on_completed=completed,
    )
    assert result == [Processed("trip", trip, Outcome.HANDLED)]
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
    assert result == [Processed("trip", trip, Outcome.COMPLETED)]
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
        assert result == [Processed("trip", trip, Outcome.FINISHED)], name
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
    assert result == [Processed("trip", trip, Outcome.COMPLETED)]
    before = await snapshot(h, "trip", trip)
    published = len(h.publisher.published)
    result = await h.send("trip_requested", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, Outcome.FINISHED)]
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


# ----------------------------------------------------------------------------- 2. compensation


async def test_rejection_compensates_completed_steps_strictly_in_reverse(h: Harness) -> None:
    trip = new_id()
    rejected = Calls()
    await start_trip(h, trip)
    await step_trip(h, trip, "flight_booked", "note_added", "hotel_booked")
    published = len(h.publisher.published)
    JOURNAL[trip].clear()

    result = await h.coordinator.process(
        SagaMessage("trip_refused", {"reason": "no visa", "code": "visa_refused"}, new_id()),
        SagaContext(trip),
        on_rejected=rejected,
    )

    assert result == [Processed("trip", trip, Outcome.REJECTED)]
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
    assert result == [Processed("trip", trip, Outcome.REJECTED)]
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

    assert result == [Processed("trip", trip, Outcome.REJECTED)]
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


# ---------------------------------------------------------------------- 3. failed compensation


async def test_a_compensation_that_keeps_failing_stops_the_compensation_there(h: Harness) -> None:
    trip = new_id()
    rejected = Calls()
    await start_trip(h, trip, broken="flight_booked")
    await step_trip(h, trip, "flight_booked", "hotel_booked")
    published = len(h.publisher.published)
    JOURNAL[trip].clear()

    result = await h.coordinator.process(
        SagaMessage("trip_refused", {"reason": "no visa", "code": "visa_refused"}, new_id()),
        SagaContext(trip),
        on_rejected=rejected,
    )

    assert result == [Processed("trip", trip, Outcome.COMPENSATION_FAILED)]
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
    assert result == [Processed("trip", trip, Outcome.FINISHED)]
    assert await snapshot(h, "trip", trip) == before


async def test_a_compensation_that_fails_once_is_retried_and_sends_once(h: Harness) -> None:
    trip = new_id()
    await start_trip(h, trip, flaky="flight_booked")
    await step_trip(h, trip, "flight_booked")
    published = len(h.publisher.published)
    JOURNAL[trip].clear()
    result = await h.send("trip_refused", {"reason": "r"}, correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, Outcome.REJECTED)]
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


# ------------------------------------------------------------------- 3b. the compensating status


async def until_blocked(trip: str, step: str) -> None:
    """Wait until the compensation of ``step`` has started (and is held at its gate)."""
    await eventually(
        lambda: _started(trip, step), f"the compensation of {step} to start", timeout=10
    )


async def _started(trip: str, step: str) -> bool:
    return f"undo:{step}" in JOURNAL[trip]


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
    assert result == [Processed("trip", trip, Outcome.COMPENSATING)]
    assert f"saga trip:{trip} is compensating; ignoring trip_confirmed" in caplog.messages
    assert h.metrics.sagas.value(saga="trip", outcome="ignored_compensating") == 1
    assert await snapshot(h, "trip", trip) == before
    # The compensation is moving: no deadline sweep takes it over.
    assert await DeadlineWatcher(h.coordinator).sweep() == 0

    gate.set()
    assert await asyncio.wait_for(refusal, 10) == [Processed("trip", trip, Outcome.REJECTED)]
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
        "trip", trip, Outcome.HANDLED
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
    assert result == [Processed("trip", trip, Outcome.COMPENSATION_FAILED)]
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


class GrumpyTripSaga(TripSaga):
    """A trip whose rejection hook queues a message, then fails."""

    name = "grumpy"

    async def on_rejected(self, rejection: Rejection, context: SagaContext) -> None:
        self.publish("trips", "never_sent", {"trip": self.id}, saga_state=State.REJECTED)
        raise RuntimeError("the hook broke")


async def test_a_failing_on_rejected_hook_still_ends_the_saga_and_sends_nothing_of_its_own(
    store: SagaStore, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness.build(store, [GrumpyTripSaga])
    trip = new_id()
    await h.send("trip_requested", correlation_id=trip, message_id=new_id())
    with caplog.at_level(logging.ERROR, logger="operations.sagas"):
        result = await h.send("trip_refused", {"reason": "r"}, correlation_id=trip)
    assert result == [Processed("grumpy", trip, Outcome.REJECTED)]
    assert f"saga grumpy:{trip}: on_rejected failed" in caplog.messages
    record = await h.record("grumpy", trip)
    assert record.status is SagaStatus.REJECTED
    assert h.publisher.names == ["book_flight", "cancel_trip"]
    assert await store.due(FAR_FUTURE) == []


# ---------------------------------------------------------------------------- 4. early messages


async def test_an_early_message_is_reported_and_handled_once_the_saga_exists(h: Harness) -> None:
    trip = new_id()
    early = new_id()
    result = await h.send("flight_booked", correlation_id=trip, message_id=early)
    assert result == [Processed("trip", trip, Outcome.EARLY)]
    assert await h.store.load("trip", trip) is None
    await nothing_stored(h.store)
    assert h.publisher.published == []
    assert h.metrics.sagas.value(saga="trip", outcome="early") == 1

    await start_trip(h, trip)
    result = await h.send("flight_booked", correlation_id=trip, message_id=early)
    assert result == [Processed("trip", trip, Outcome.HANDLED)]
    record = await h.record("trip", trip)
    assert record.data["done"] == ["trip_requested", "flight_booked"]
    assert record.steps[-1].message_id == early
    assert h.publisher.names == ["book_flight", "book_hotel"]


# -------------------------------------------------------------------------------- 5. duplicates


async def test_the_same_message_id_twice_is_a_duplicate(h: Harness) -> None:
    trip = new_id()
    first, second = new_id(), new_id()
    assert await h.send("trip_requested", correlation_id=trip, message_id=first) == [
        Processed("trip", trip, Outcome.HANDLED)
    ]
    assert await h.send("flight_booked", correlation_id=trip, message_id=second) == [
        Processed("trip", trip, Outcome.HANDLED)
    ]
    before = await snapshot(h, "trip", trip)
    for name, message_id in (("trip_requested", first), ("flight_booked", second)):
        assert await h.send(name, correlation_id=trip, message_id=message_id) == [
            Processed("trip", trip, Outcome.DUPLICATE)
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
    assert result == [Processed("trip", trip, Outcome.REJECTED)]
    before = await snapshot(h, "trip", trip)
    published = len(h.publisher.published)
    result = await h.send("trip_refused", correlation_id=trip, message_id=refusal)
    # The saga has finished: that is what is reported (before any duplicate check).
    assert result == [Processed("trip", trip, Outcome.FINISHED)]
    assert await snapshot(h, "trip", trip) == before
    assert len(h.publisher.published) == published
    assert JOURNAL[trip].count("undone:trip_requested") == 1


# --------------------------------------------------------------------------------- 6. deadlines


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
        "trip", trip, Outcome.HANDLED
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
        "trip", trip, Outcome.FINISHED
    )
    result = await h.send("hotel_booked", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, Outcome.FINISHED)]
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
    assert result == Processed("order_making", saga_id, Outcome.REJECTED)
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


# ------------------------------------------------------------------------------------ 7. outbox


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
    assert first == Published(
        exchange="trips",
        routing_key="book_flight",
        body={"trip": trip, "traveller": "ann"},
        correlation_id=trip,
        message_id=first.message_id,
        message_context={**original, "name": "book_flight"},
        saga=State.PENDING,
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
    assert (pending.saga, pending.saga_id) == ("trip", trip)
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


class RivalStore:
    """Delegates to a store, but lets a rival writer commit just before the coordinator's first
    commit of a step (the saga's version moves on under it)."""

    def __init__(self, store: SagaStore) -> None:
        self.inner = store
        self.rivals = 0
        self.armed = False

    async def load(self, saga: str, saga_id: str) -> Loaded | None:
        return await self.inner.load(saga, saga_id)

    async def commit(
        self,
        record: SagaRecord,
        expected_version: int,
        outbox: list[OutboxEntry],
        finished_ttl_seconds: int,
    ) -> bool:
        if self.armed:
            self.armed = False
            current = await self.inner.load(record.saga, record.id)
            assert current is not None
            assert await self.inner.commit(current.record, current.version, [], 60)
            self.rivals += 1
        return await self.inner.commit(record, expected_version, outbox, finished_ttl_seconds)

    async def pending(self, older_than: float, limit: int = 100) -> list[Pending]:
        return await self.inner.pending(older_than, limit)

    async def acknowledge(self, saga: str, saga_id: str, stored: list[str]) -> None:
        await self.inner.acknowledge(saga, saga_id, stored)

    async def due(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        return await self.inner.due(now, limit)

    async def outbox(self, saga: str, saga_id: str) -> Pending:
        return await self.inner.outbox(saga, saga_id)

    async def lease_outbox(self, saga: str, saga_id: str, holder: str, seconds: float) -> bool:
        return await self.inner.lease_outbox(saga, saga_id, holder, seconds)

    async def release_outbox(self, saga: str, saga_id: str, holder: str) -> None:
        await self.inner.release_outbox(saga, saga_id, holder)


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


# ------------------------------------------------------------------ 8. one message, several sagas


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
        Processed("trip", trip, Outcome.HANDLED),
        Processed("invoice", account, Outcome.HANDLED),
    ]
    assert (await h.record("trip", trip)).data["done"] == ["trip_requested"]
    assert (await h.record("invoice", account)).data["lines"] == ["ann"]
    assert sorted(h.publisher.names) == ["book_flight", "open_invoice"]

    result = await h.send(
        "trip_confirmed", {"account": account}, correlation_id=trip, message_id=new_id()
    )
    assert result == [
        Processed("trip", trip, Outcome.COMPLETED),
        Processed("invoice", account, Outcome.COMPLETED),
    ]
    # Without the account, the invoice saga does not take the message at all.
    other = new_id()
    result = await h.send("trip_requested", correlation_id=other, message_id=new_id())
    assert result == [Processed("trip", other, Outcome.HANDLED)]


# ------------------------------------------------------------- 9. concurrency across processes


async def test_two_processes_lose_no_update(
    redis_client: aioredis.Redis, servers: tuple[str, str]
) -> None:
    clients = [aioredis.Redis.from_url(servers[1]) for _ in range(2)]
    try:
        processes = [Harness.build(RedisSagaStore(c, prefix="t"), [TallySaga]) for c in clients]
        tally = new_id()
        opened = await processes[0].send("tally_opened", correlation_id=tally, message_id=new_id())
        assert opened == [Processed("tally", tally, Outcome.HANDLED)]
        messages = {item: new_id() for item in range(50)}

        async def deliver(item: int) -> Processed:
            (result,) = await processes[item % 2].send(
                "tally_item", {"item": item}, correlation_id=tally, message_id=messages[item]
            )
            return result

        # First delivery, all 50 at once: each step is either committed or reported CONFLICT
        # (other writers kept winning), and what is in the data is exactly what was committed.
        results = await asyncio.gather(*(deliver(item) for item in messages))
        assert {result.outcome for result in results} <= {Outcome.HANDLED, Outcome.CONFLICT}
        handled = {
            item for item, r in zip(messages, results, strict=True) if r.outcome == "handled"
        }
        loaded = await processes[0].load("tally", tally)
        assert sorted(loaded.record.data["items"]) == sorted(handled)
        assert loaded.version == 1 + len(handled)

        # A CONFLICT goes back to the queue, as the inbox's Retry does, until every one is in.
        waiting = sorted(set(messages) - handled)
        for _ in range(10):
            if not waiting:
                break
            results = await asyncio.gather(*(deliver(item) for item in waiting))
            assert {result.outcome for result in results} <= {Outcome.HANDLED, Outcome.CONFLICT}
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
            [Outcome.HANDLED, Outcome.DUPLICATE]
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
    key = store.saga_key(f"trip:{trip}")
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


async def test_a_finished_saga_ignoring_a_message_is_logged_and_counted(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    trip = new_id()
    await start_trip(h, trip)
    await h.send("trip_refused", correlation_id=trip, message_id=new_id())
    with caplog.at_level(logging.INFO, logger="operations.sagas"):
        result = await h.send("hotel_booked", correlation_id=trip, message_id=new_id())
    assert result == [Processed("trip", trip, Outcome.FINISHED)]
    ignored = [r for r in caplog.records if r.name == "operations.sagas"]
    assert [r.getMessage() for r in ignored] == [
        f"saga trip:{trip} is rejected; ignoring hotel_booked"
    ]
    assert ignored[0].levelno == logging.INFO
    assert getattr(ignored[0], "correlation_id", None) == trip
    assert h.metrics.sagas.value(saga="trip", outcome="ignored_finished") == 1


# ------------------------------------------------------------------- 10. the order-maker saga


async def make_order(
    h: Harness, saga_id: str, order: str, parcels: list[str], **context: Any
) -> list[Processed]:
    return await h.send(
        "make_order",
        {"orderId": order, "customerId": "customer-1", "parcelIds": parcels},
        correlation_id=saga_id,
        message_id=new_id(),
        message_context={"Name": "make_order", **context},
    )


async def order_event(h: Harness, saga_id: str, name: str, **body: Any) -> list[Processed]:
    return await h.send(name, body, correlation_id=saga_id, message_id=new_id())


ORDER_STEPS: list[tuple[str, dict[str, Any]]] = [
    ("order_created", {}),
    ("parcel_added_to_order", {"parcelId": "p1"}),
    ("parcel_added_to_order", {"parcelId": "p2"}),
    ("vehicle_assigned_to_order", {}),
]


async def test_the_order_maker_happy_path(h: Harness) -> None:
    saga_id, order = new_id(), new_id()
    completed = Calls()
    user = {"Id": "u-1"}
    assert await make_order(h, saga_id, order, ["p1", "p2"], User=user) == [
        Processed("order_making", saga_id, Outcome.HANDLED)
    ]
    (create,) = h.publisher.published
    assert (create.exchange, create.routing_key, create.saga) == (
        "orders",
        "create_order",
        State.PENDING,
    )
    assert create.body == {"orderId": order, "customerId": "customer-1"}
    assert create.message_context == {"User": user, "name": "create_order"}
    assert create.correlation_id == saga_id

    assert await order_event(h, saga_id, "order_created", orderId=order) == [
        Processed("order_making", saga_id, Outcome.HANDLED)
    ]
    added = h.publisher.named("add_parcel_to_order")
    assert [m.body for m in added] == [
        {"orderId": order, "parcelId": p, "customerId": "customer-1"} for p in ("p1", "p2")
    ]
    assert {m.exchange for m in added} == {"orders"}

    await order_event(h, saga_id, "parcel_added_to_order", parcelId="p1")
    assert h.publisher.named("assign_vehicle_to_order") == []
    await order_event(h, saga_id, "parcel_added_to_order", parcelId="p2")
    (assign,) = h.publisher.named("assign_vehicle_to_order")
    assert assign.exchange == "orders"
    assert assign.body["orderId"] == order
    assert assign.body["vehicleId"]
    assert assign.body["deliveryDate"]

    await order_event(h, saga_id, "vehicle_assigned_to_order")
    (reserve,) = h.publisher.named("reserve_resource")
    assert reserve.exchange == "availability"
    assert reserve.saga is State.PENDING
    assert reserve.body == {
        "resourceId": assign.body["vehicleId"],
        "customerId": "customer-1",
        "dateTime": assign.body["deliveryDate"],
        "priority": 1,
        "orderId": order,
    }

    result = await h.coordinator.process(
        SagaMessage("order_approved", {"orderId": order}, new_id()),
        SagaContext(saga_id),
        on_completed=completed,
    )
    assert result == [Processed("order_making", saga_id, Outcome.COMPLETED)]
    assert completed.seen == [("order_approved", saga_id)]
    (done,) = h.publisher.named("make_order_completed")
    assert (done.exchange, done.saga, done.body) == (
        "ordermaker",
        State.COMPLETED,
        {"orderId": order},
    )
    assert h.publisher.names == [
        "create_order",
        "add_parcel_to_order",
        "add_parcel_to_order",
        "assign_vehicle_to_order",
        "reserve_resource",
        "make_order_completed",
    ]
    record = await h.record("order_making", saga_id)
    assert record.status is SagaStatus.COMPLETED
    assert record.data["added_parcel_ids"] == ["p1", "p2"]
    assert await h.store.due(FAR_FUTURE) == []


# How far the saga gets before each rejection: the step whose command the event answers.
REJECTION_PROGRESS = {
    "create_order_rejected": 0,
    "add_parcel_to_order_rejected": 1,
    "assign_vehicle_to_order_rejected": 3,
    "reserve_resource_rejected": 4,
}


@pytest.mark.parametrize(
    ("event", "progress"),
    [
        *REJECTION_PROGRESS.items(),
        *((event, 4) for event in REJECTED_EVENTS if event not in REJECTION_PROGRESS),
    ],
)
async def test_each_order_rejection_cancels_the_order(
    h: Harness, event: str, progress: int
) -> None:
    saga_id, order = new_id(), new_id()
    rejected = Calls()
    await make_order(h, saga_id, order, ["p1", "p2"])
    steps = ORDER_STEPS[:progress]
    for name, body in steps:
        assert (await order_event(h, saga_id, name, **body))[0].outcome is Outcome.HANDLED
    published = len(h.publisher.published)

    result = await h.coordinator.process(
        SagaMessage(event, {"orderId": order, "reason": "sorry", "code": "nope"}, new_id()),
        SagaContext(saga_id),
        on_rejected=rejected,
    )

    assert result == [Processed("order_making", saga_id, Outcome.REJECTED)]
    assert rejected.seen == [(event, saga_id)]
    cancel, final = h.publisher.published[published:]
    expected = {"orderId": order, "reason": "sorry", "code": "nope"}
    assert (cancel.exchange, cancel.routing_key, cancel.saga, cancel.body) == (
        "orders",
        "cancel_order",
        State.REJECTED,
        expected,
    )
    assert (final.exchange, final.routing_key, final.saga, final.body) == (
        "ordermaker",
        "make_order_rejected",
        State.REJECTED,
        expected,
    )
    record = await h.record("order_making", saga_id)
    assert (record.status, record.reason, record.code) == (SagaStatus.REJECTED, "sorry", "nope")
    assert [e.compensated for e in record.steps] == [True] * (1 + len(steps)) + [False]
    # Too late now: an approval changes nothing.
    assert (await order_event(h, saga_id, "order_approved"))[0].outcome is Outcome.FINISHED
    assert len(h.publisher.published) == published + 2


async def test_a_rejection_without_reason_or_code_names_the_event(h: Harness) -> None:
    saga_id, order = new_id(), new_id()
    await make_order(h, saga_id, order, ["p1"])
    await order_event(h, saga_id, "create_order_rejected")
    assert h.publisher.named("make_order_rejected")[0].body == {
        "orderId": order,
        "reason": "create_order_rejected received",
        "code": "create_order_rejected",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"orderId": "o-1", "customerId": "c-1", "parcelIds": []},
        {"orderId": "o-1", "customerId": "c-1"},
        {"orderId": "o-1", "parcelIds": ["p1"]},
        {"customerId": "c-1", "parcelIds": ["p1"]},
    ],
)
async def test_an_invalid_make_order_is_rejected(h: Harness, body: dict[str, Any]) -> None:
    saga_id = new_id()
    rejected = Calls()
    result = await h.coordinator.process(
        SagaMessage("make_order", body, new_id()), SagaContext(saga_id), on_rejected=rejected
    )
    assert result == [Processed("order_making", saga_id, Outcome.REJECTED)]
    assert rejected.seen == [("make_order", saga_id)]
    record = await h.record("order_making", saga_id)
    assert (record.status, record.code) == (SagaStatus.REJECTED, "invalid_order")
    assert record.reason == "make_order needs orderId, customerId and parcel ids"
    # Nothing was created, so nothing is cancelled: only the final event leaves.
    (final,) = h.publisher.published
    assert (final.routing_key, final.saga) == ("make_order_rejected", State.REJECTED)
    assert final.body["code"] == "invalid_order"
    assert await h.store.due(FAR_FUTURE) == []


# ------------------------------------------------- 11. statuses over HTTP and in GET /metrics


def gauge(text: str, saga: str, status: str) -> float | None:
    series = f'operations_saga_instances{{saga="{saga}",status="{status}"}} '
    for line in text.splitlines():
        if line.startswith(series):
            return float(line[len(series) :])
    return None


async def test_compensating_and_failed_sagas_through_get_sagas_and_metrics(
    service: RunningService,
    http: httpx.AsyncClient,
    token: Callable[..., str],
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    """A saga type run by a coordinator in another process, on the service's Redis: the service
    lists it by status and counts it in GET /metrics while its compensation is held, then once
    that compensation has failed for good."""
    store = RedisSagaStore(redis_client, settings.key_prefix, Shards(settings.redis_shards))
    h = Harness.build(store, [TripSaga])
    admin = {"Authorization": f"Bearer {token('ops', 'admin')}"}
    trip, other = new_id(), new_id()
    await start_trip(h, trip, broken="trip_requested")
    await step_trip(h, trip, "flight_booked")
    await start_trip(h, other)
    gate = GATES[trip, "flight_booked"] = asyncio.Event()
    refusal = asyncio.create_task(
        h.send("trip_refused", {"reason": "no visa"}, correlation_id=trip, message_id=new_id())
    )
    await until_blocked(trip, "flight_booked")

    async def listed(status: str) -> list[dict[str, Any]]:
        response = await http.get("/sagas", params={"status": status}, headers=admin)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    compensating = await listed("compensating")
    assert [(s["id"], s["status"], s["reason"]) for s in compensating] == [
        (trip, "compensating", "no visa")
    ]
    assert "resumeAt" not in compensating[0] and "compensateSteps" not in compensating[0]
    assert [s["id"] for s in await listed("pending")] == [other]

    async def scraped(expected: dict[str, float]) -> str | None:
        text = (await http.get("/metrics")).text
        seen = {status: gauge(text, "trip", status) for status in expected}
        return text if seen == expected else None

    held = {"pending": 1.0, "compensating": 1.0, "compensation_failed": 0.0, "rejected": 0.0}
    text = await eventually(lambda: scraped(held), "the compensating saga in /metrics")
    assert "# TYPE operations_saga_instances gauge" in text

    gate.set()
    result = await asyncio.wait_for(refusal, 10)
    assert result == [Processed("trip", trip, Outcome.COMPENSATION_FAILED)]
    assert await listed("compensating") == []
    failed = await listed("compensation_failed")
    assert [(s["id"], s["status"]) for s in failed] == [(trip, "compensation_failed")]
    assert [
        (s["message"], s["compensated"], s["compensationError"]) for s in failed[0]["steps"]
    ] == [
        ("trip_requested", False, "RuntimeError: cannot undo trip_requested"),
        ("flight_booked", True, None),
        ("trip_refused", False, None),
    ]
    ended = {"pending": 1.0, "compensating": 0.0, "compensation_failed": 1.0, "completed": 0.0}
    await eventually(lambda: scraped(ended), "the failed compensation in /metrics")

    response = await http.get("/sagas", params={"status": "lost"}, headers=admin)
    assert response.status_code == 400
    assert "compensating" in response.json()["reason"]


# ------------------------------------------------------------------- 12. the README's example

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    """The Python blocks of the README's "Writing a saga", in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Writing a saga", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, "the saga, then the code that runs it"
    return "\n".join(blocks)


async def test_the_readme_saga_example_runs(
    servers: tuple[str, str],
    redis_client: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = readme_example()
    for default, ours in zip(
        ("amqp://guest:guest@127.0.0.1:5672/", "redis://127.0.0.1:6379/0"), servers, strict=True
    ):
        assert default in code
        code = code.replace(default, ours)
    assert code.rstrip().endswith("asyncio.run(main())")
    code = code.rstrip().removesuffix("asyncio.run(main())")  # this test's loop runs it
    async with amqp.channel() as channel:
        deliveries = await channel.declare_exchange(
            "deliveries", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(deliveries, routing_key="add_delivery_registration")
        namespace: dict[str, Any] = {"__name__": "readme_example"}
        exec(compile(code, str(README), "exec", dont_inherit=True), namespace)
        await namespace["main"]()

        printed = capsys.readouterr().out
        assert "Processed(saga='shipping', saga_id='op-1', outcome=<Outcome.HANDLED" in printed
        record = await RedisSagaStore(redis_client).load("shipping", "op-1")
        assert record is not None
        assert record.record.status is SagaStatus.PENDING
        assert record.record.data == {"parcel_id": "p-1", "attempts": []}
        assert record.record.deadline == pytest.approx(time.time() + 300, abs=30)

        async def sent() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await queue.get(no_ack=True, fail=False)

        message = await eventually(sent, "the example's message on the broker")
        assert message.correlation_id == "op-1"
        assert orjson.loads(message.body) == {"parcelId": "p-1"}
        assert (message.headers or {}).get("Saga") in ("Pending", b"Pending")


def test_the_openapi_status_enum_is_every_saga_status() -> None:
    parameters = openapi.document()["paths"]["/sagas"]["get"]["parameters"]
    (status,) = [p for p in parameters if p["name"] == "status"]
    assert status["schema"]["enum"] == [s.value for s in SagaStatus]
    assert "compensating" in status["schema"]["enum"]
