"""The sagas the coordinator tests drive: a trip with compensable steps that journals what it
does (and whose compensations can be held at a gate or made to fail), a trip whose rejection
hook fails, an invoice keyed by the account in the body, and a tally that shows lost updates;
and FAR_FUTURE, a time after every deadline and retry they set."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from operations.sagas import Rejection, Saga, SagaContext, SagaMessage, compensates, start, step
from operations.states import State

# What the test sagas did, in the order they did it, per saga id: steps ("do:"), each attempt at a
# compensation ("undo:" when it starts, "undone:" when it finishes) and the rejection hook.
JOURNAL: defaultdict[str, list[str]] = defaultdict(list)
FAR_FUTURE = 4_102_444_800.0  # 2100-01-01
# Compensations that wait, per (saga id, step), until the test sets the event.
GATES: dict[tuple[str, str], asyncio.Event] = {}


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


class GrumpyTripSaga(TripSaga):
    """A trip whose rejection hook queues a message, then fails."""

    name = "grumpy"

    async def on_rejected(self, rejection: Rejection, context: SagaContext) -> None:
        self.publish("trips", "never_sent", {"trip": self.id}, saga_state=State.REJECTED)
        raise RuntimeError("the hook broke")
