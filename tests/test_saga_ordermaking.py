"""Pacco's order-maker saga in the coordinator, against the memory and the Redis store: the happy
path's commands and final event, each rejection cancelling the order, and invalid make_order
commands. (tests/test_ordermaking.py runs it end to end over RabbitMQ.)"""

from __future__ import annotations

from typing import Any

import pytest

from operations.pacco.ordermaking import REJECTED_EVENTS
from operations.sagas import Processed, SagaContext, SagaMessage, SagaOutcome, SagaStatus
from operations.states import State
from tests.sagas_support import Calls, Harness, make_order, order_event
from tests.sample_sagas import FAR_FUTURE
from tests.support import new_id

pytestmark = pytest.mark.usefixtures("journal")

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
        Processed("order_making", saga_id, SagaOutcome.HANDLED)
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
        Processed("order_making", saga_id, SagaOutcome.HANDLED)
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
    assert result == [Processed("order_making", saga_id, SagaOutcome.COMPLETED)]
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
        assert (await order_event(h, saga_id, name, **body))[0].outcome is SagaOutcome.HANDLED
    published = len(h.publisher.published)

    result = await h.coordinator.process(
        SagaMessage(event, {"orderId": order, "reason": "sorry", "code": "nope"}, new_id()),
        SagaContext(saga_id),
        on_rejected=rejected,
    )

    assert result == [Processed("order_making", saga_id, SagaOutcome.REJECTED)]
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
    assert (await order_event(h, saga_id, "order_approved"))[0].outcome is SagaOutcome.FINISHED
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
    assert result == [Processed("order_making", saga_id, SagaOutcome.REJECTED)]
    assert rejected.seen == [("make_order", saga_id)]
    record = await h.record("order_making", saga_id)
    assert (record.status, record.code) == (SagaStatus.REJECTED, "invalid_order")
    assert record.reason == "make_order needs orderId, customerId and parcel ids"
    # Nothing was created, so nothing is cancelled: only the final event leaves.
    (final,) = h.publisher.published
    assert (final.routing_key, final.saga) == ("make_order_rejected", State.REJECTED)
    assert final.body["code"] == "invalid_order"
    assert await h.store.due(FAR_FUTURE) == []
