"""Typed saga data that survives change (contract §8): nested dataclasses, lists, dicts,
optionals, enums and datetimes come back from the stored JSON with their types (Hypothesis, on
generated data), and data written by an older version of the class still loads: added fields take
their defaults, removed fields are ignored."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operations.amqp.settlements import DeadLetter
from operations.errors import SagaDataError
from operations.sagas import Saga, SagaContext, SagaMessage, SagaStore, start, step
from operations.sagas.intake import SagaIntake
from tests.sagas_support import Harness


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"


class Priority(IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Address:
    street: str = ""
    number: int | None = None


@dataclass
class Item:
    sku: str = ""
    quantity: int = 0
    colour: Colour = Colour.RED
    price: float = 0.0


@dataclass
class Shipment:
    items: list[Item] = field(default_factory=list)
    addresses: dict[str, Address] = field(default_factory=dict)
    by_day: dict[str, list[Item]] = field(default_factory=dict)
    when: dt.datetime | None = None
    colour: Colour | None = None
    priority: Priority = Priority.LOW
    note: str | None = None
    tags: list[str] = field(default_factory=list)


class ShipmentSaga(Saga[Shipment]):
    name = "shipment"
    data_type = Shipment

    @start("shipment_requested")
    async def requested(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.items.append(Item(str(message.get("sku")), 2, Colour.GREEN, 9.5))
        self.data.addresses["home"] = Address("High Street", 7)
        self.data.when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
        self.data.priority = Priority.HIGH

    @step("shipment_packed")
    async def packed(self, message: SagaMessage, context: SagaContext) -> None:
        # The data came back typed: these would fail on plain dicts and strings.
        assert isinstance(self.data.items[0], Item)
        assert isinstance(self.data.items[0].colour, Colour)
        assert self.data.when is not None and self.data.when.tzinfo is not None
        self.data.by_day[self.data.when.date().isoformat()] = list(self.data.items)
        self.data.note = f"packed by {message.get('by')}"


texts = st.text(max_size=12)
numbers = st.integers(min_value=-(2**53), max_value=2**53)
items = st.builds(
    Item,
    sku=texts,
    quantity=numbers,
    colour=st.sampled_from(Colour),
    price=st.floats(allow_nan=False, allow_infinity=False),
)
shipments = st.builds(
    Shipment,
    items=st.lists(items, max_size=4),
    addresses=st.dictionaries(
        texts, st.builds(Address, street=texts, number=st.none() | numbers), max_size=3
    ),
    by_day=st.dictionaries(texts, st.lists(items, max_size=3), max_size=3),
    when=st.none() | st.datetimes(timezones=st.just(dt.UTC)),
    colour=st.none() | st.sampled_from(Colour),
    priority=st.sampled_from(Priority),
    note=st.none() | texts,
    tags=st.lists(texts, max_size=4),
)


@given(shipments)
@settings(max_examples=150, deadline=None)
def test_data_comes_back_from_its_stored_json_with_its_types(data: Shipment) -> None:
    saga = ShipmentSaga("s", data)
    stored = orjson.loads(orjson.dumps(saga.dump_data()))  # as the store keeps it
    loaded = ShipmentSaga.load_data(stored)
    assert loaded == data
    assert all(isinstance(item, Item) for item in loaded.items)
    assert all(isinstance(a, Address) for a in loaded.addresses.values())
    assert loaded.when is None or isinstance(loaded.when, dt.datetime)
    assert isinstance(loaded.priority, Priority)


# What an older version of the shipment saga wrote: Item had a ``gift`` flag since removed, and
# no colour or price yet; the shipment had a ``carrier`` since removed, and no priority, note,
# tags or by_day yet.
@dataclass
class OldItem:
    sku: str = ""
    quantity: int = 0
    gift: bool = False


@dataclass
class OldShipment:
    items: list[OldItem] = field(default_factory=list)
    addresses: dict[str, Address] = field(default_factory=dict)
    when: dt.datetime | None = None
    colour: Colour | None = None
    carrier: str = "post"


class OldShipmentSaga(Saga[OldShipment]):
    name = "shipment"
    data_type = OldShipment

    @start("shipment_requested")
    async def requested(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.items.append(OldItem(str(message.get("sku")), 2, gift=True))
        self.data.addresses["home"] = Address("High Street", 7)
        self.data.when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


@given(
    st.builds(
        OldShipment,
        items=st.lists(st.builds(OldItem, sku=texts, quantity=numbers), max_size=4),
        when=st.none() | st.datetimes(timezones=st.just(dt.UTC)),
        carrier=texts,
    )
)
@settings(max_examples=100, deadline=None)
def test_data_written_by_an_older_class_loads(old: OldShipment) -> None:
    stored = orjson.loads(orjson.dumps(OldShipmentSaga("s", old).dump_data()))
    loaded = ShipmentSaga.load_data(stored)
    assert [(i.sku, i.quantity, i.colour, i.price) for i in loaded.items] == [
        (i.sku, i.quantity, Colour.RED, 0.0) for i in old.items
    ]
    assert (loaded.when, loaded.priority, loaded.note, loaded.tags) == (
        old.when,
        Priority.LOW,
        None,
        [],
    )


async def test_a_saga_started_by_an_older_version_runs_on_after_an_upgrade(
    store: SagaStore,
) -> None:
    """The old class starts the saga and commits its data to the store (memory or Redis); the
    new class takes the next step on it."""
    shipment = uuid.uuid4().hex
    before = Harness.build(store, [OldShipmentSaga])
    await before.send("shipment_requested", {"sku": "k-1"}, correlation_id=shipment)
    assert (await before.record("shipment", shipment)).data["items"][0]["gift"] is True

    after = Harness.build(store, [ShipmentSaga])
    (processed,) = await after.send("shipment_packed", {"by": "ann"}, correlation_id=shipment)
    assert processed.outcome.value == "handled"
    record = await after.record("shipment", shipment)
    assert record.data["note"] == "packed by ann"
    assert "gift" not in record.data["items"][0] and "carrier" not in record.data
    assert record.data["by_day"] == {"2026-12-01": [record.data["items"][0]]}
    assert record.data["when"] == "2026-12-01T09:30:00Z"


def test_data_that_no_longer_fits_is_a_typed_error() -> None:
    @dataclass
    class Strict:
        count: int

    class StrictSaga(Saga[Strict]):
        name = "strict"
        data_type = Strict

    stored: dict[str, Any] = {"count": "many"}
    with pytest.raises(SagaDataError, match=r"saga strict: stored data does not fit.*count"):
        StrictSaga.load_data(stored)
    with pytest.raises(SagaDataError, match="count"):
        StrictSaga.load_data({})


@dataclass(frozen=True)
class Delivery:
    """A delivered saga message (the ``Delivered`` protocol)."""

    routing_key: str
    correlation_id: str
    body: bytes = b"{}"
    exchange: str | None = "shipments"
    headers: Mapping[str, Any] = field(default_factory=lambda: {"Saga": "Pending"})
    message_id: str | None = None
    timestamp: dt.datetime | None = None
    content_type: str | None = None


async def test_a_message_for_a_saga_whose_data_no_longer_fits_is_dead_lettered(
    store: SagaStore,
) -> None:
    """A release changed a field's type incompatibly: the saga's next message cannot be run on
    its stored data, so it goes to the dead-letter queue with the reason, rather than being
    retried for ever or crashing the consumer."""

    @dataclass
    class Renumbered:
        items: int = 0  # was a list of items

    class RenumberedSaga(Saga[Renumbered]):
        name = "shipment"
        data_type = Renumbered

        @step("shipment_packed")
        async def packed(self, message: SagaMessage, context: SagaContext) -> None: ...

    shipment = str(uuid.uuid4())
    before = Harness.build(store, [ShipmentSaga])
    await before.send("shipment_requested", {"sku": "k-1"}, correlation_id=shipment)
    after = Harness.build(store, [RenumberedSaga])
    (settled,) = await SagaIntake(after.coordinator).process(
        [Delivery("shipment_packed", shipment, message_id=uuid.uuid4().hex)]
    )
    assert isinstance(settled, DeadLetter)
    assert settled.reason.startswith("saga message shipment_packed: saga shipment: stored data")
    assert "items" in settled.reason
