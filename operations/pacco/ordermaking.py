"""Pacco's order-maker saga (AIOrderMakingSaga), on this coordinator.

MakeOrder ─▶ CreateOrder ─▶ OrderCreated ─▶ AddParcelToOrder (each parcel) ─▶ ParcelAddedToOrder
(all of them) ─▶ pick a vehicle and a date ─▶ AssignVehicleToOrder ─▶ VehicleAssignedToOrder ─▶
ReserveResource ─▶ OrderApproved ─▶ MakeOrderCompleted.

A rejection at any step (or the deadline, ``OPERATIONS_SAGA_DEADLINE_SECONDS``, a setting the saga
reads itself) compensates: CancelOrder, then MakeOrderRejected with the code and reason. The saga
is keyed by the correlation id, the operation the user watches. Once the vehicle is reserved it
refuses to be cancelled: CancelOrder does not release a reservation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from operations.auth.identity import id_problem
from operations.sagas.saga import (
    Rejection,
    Saga,
    SagaContext,
    SagaMessage,
    compensates,
    start,
    step,
)
from operations.settings import read_setting, whole_number
from operations.states import State

REJECTED_EVENTS = (
    "create_order_rejected",
    "add_parcel_to_order_rejected",
    "assign_vehicle_to_order_rejected",
    "reserve_resource_rejected",
    "order_for_reserved_vehicle_not_found",
)
FLEET = (
    "0b4b4a35-6b5a-4c1e-9d0e-7c2f35d6a001",
    "0b4b4a35-6b5a-4c1e-9d0e-7c2f35d6a002",
    "0b4b4a35-6b5a-4c1e-9d0e-7c2f35d6a003",
)
MAX_PARCELS = 100


@dataclass
class OrderMakingData:
    order_id: str = ""
    customer_id: str = ""
    parcel_ids: list[str] = field(default_factory=list)
    added_parcel_ids: list[str] = field(default_factory=list)
    vehicle_id: str | None = None
    reservation_date: str | None = None
    reservation_priority: int = 0
    resource_reserved: bool = False

    @property
    def all_parcels_added(self) -> bool:
        return bool(self.parcel_ids) and set(self.parcel_ids) <= set(self.added_parcel_ids)


@dataclass(frozen=True)
class OrderMakingSettings:
    deadline_seconds: int = 120


class OrderMakingSaga(Saga[OrderMakingData]):
    name = "order_making"
    data_type = OrderMakingData
    http_start = "make_order"
    business_keys = ("order_id", "customer_id")
    # Pacco's services answer within a second or two; half a minute on one step is worth a look
    # long before the deadline (OPERATIONS_SAGA_DEADLINE_SECONDS, 120 s) rejects the order.
    objective_seconds = 30.0
    path = [  # noqa: RUF012 - the class's declared shape, never changed
        "make_order",
        "order_created",
        "parcel_added_to_order",
        "vehicle_assigned_to_order",
        "order_approved",
    ]
    # The codes Pacco's services reject with, in words for the owner of the order.
    reasons = {  # noqa: RUF012 - the class's declared shape, never changed
        "create_order_failed": "The order could not be created.",
        "add_parcel_to_order_failed": "A parcel could not be added to the order.",
        "assign_vehicle_to_order_failed": "No vehicle could be assigned to the order.",
        "reserve_resource_failed": "The vehicle could not be reserved for the order.",
        "approve_order_failed": "The order could not be approved.",
        "invalid_order": "The order was incomplete.",
        "order_not_found": "The order could not be found.",
        "invalid_command": "A service could not understand the request.",
    }
    settings: OrderMakingSettings

    @classmethod
    def configure(cls, environ: Mapping[str, str]) -> OrderMakingSettings:
        return OrderMakingSettings(
            read_setting(
                environ,
                "OPERATIONS_SAGA_DEADLINE_SECONDS",
                OrderMakingSettings.deadline_seconds,
                whole_number(1, 30 * 86_400),
            )
        )

    def refuses_cancel(self) -> str | None:
        if self.data.resource_reserved:
            return "the vehicle is already reserved for this order; CancelOrder cannot release it"
        return None

    @start("make_order")
    async def make_order(self, message: SagaMessage, context: SagaContext) -> None:
        listed = message.get("parcelIds")
        parcel_ids = listed if isinstance(listed, list) and listed else [message.get("parcelId")]
        parcel_ids = [p for p in parcel_ids if p is not None]
        customer = message.get("customerId")
        order_id = str(message.get("orderId") or "")
        if not isinstance(customer, str) or not customer or not parcel_ids or not order_id:
            self.reject("make_order needs orderId, customerId and parcel ids", "invalid_order")
            return
        # The rules POST /orders holds its body to, for a MakeOrder sent over the broker.
        problem = _ids_problem(order_id, customer, parcel_ids)
        if problem is not None:
            self.reject(f"make_order: {problem}", "invalid_order")
            return
        self.data.order_id = order_id
        self.data.customer_id = customer
        self.data.parcel_ids = [str(parcel) for parcel in parcel_ids]
        settings = self.settings or OrderMakingSettings()
        self.set_deadline(settings.deadline_seconds)
        self.publish(
            "orders", "create_order", {"orderId": self.data.order_id, "customerId": customer}
        )

    @compensates("make_order")
    async def cancel_order(self, message: SagaMessage, context: SagaContext) -> None:
        rejection = self.rejection or Rejection("the order was not made")
        self.publish(
            "orders",
            "cancel_order",
            {"orderId": self.data.order_id, "reason": rejection.reason, "code": rejection.code},
            saga_state=State.REJECTED,
        )

    @step("order_created")
    async def order_created(self, message: SagaMessage, context: SagaContext) -> None:
        for parcel_id in self.data.parcel_ids:
            self.publish(
                "orders",
                "add_parcel_to_order",
                {
                    "orderId": self.data.order_id,
                    "parcelId": parcel_id,
                    "customerId": self.data.customer_id,
                },
            )

    @step("parcel_added_to_order")
    async def parcel_added(self, message: SagaMessage, context: SagaContext) -> None:
        parcel_id = message.get("parcelId")
        if isinstance(parcel_id, str) and parcel_id not in self.data.added_parcel_ids:
            self.data.added_parcel_ids.append(parcel_id)
        if not self.data.all_parcels_added or self.data.vehicle_id is not None:
            return
        self.data.vehicle_id, self.data.reservation_date = self._choose_vehicle_and_date()
        self.data.reservation_priority = 1
        self.publish(
            "orders",
            "assign_vehicle_to_order",
            {
                "orderId": self.data.order_id,
                "vehicleId": self.data.vehicle_id,
                "deliveryDate": self.data.reservation_date,
            },
        )

    @step("vehicle_assigned_to_order")
    async def vehicle_assigned(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.resource_reserved = True
        self.publish(
            "availability",
            "reserve_resource",
            {
                "resourceId": self.data.vehicle_id,
                "customerId": self.data.customer_id,
                "dateTime": self.data.reservation_date,
                "priority": self.data.reservation_priority,
                "orderId": self.data.order_id,
            },
        )

    @step("order_approved")
    async def order_approved(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish(
            "ordermaker",
            "make_order_completed",
            {"orderId": self.data.order_id},
            saga_state=State.COMPLETED,
        )
        self.complete()

    @step("create_order_rejected")
    async def create_order_rejected(self, message: SagaMessage, context: SagaContext) -> None:
        self._rejected(message)

    @step("add_parcel_to_order_rejected")
    async def parcel_rejected(self, message: SagaMessage, context: SagaContext) -> None:
        self._rejected(message)

    @step("assign_vehicle_to_order_rejected")
    async def vehicle_rejected(self, message: SagaMessage, context: SagaContext) -> None:
        self._rejected(message)

    @step("reserve_resource_rejected")
    async def reservation_rejected(self, message: SagaMessage, context: SagaContext) -> None:
        self._rejected(message)

    @step("order_for_reserved_vehicle_not_found")
    async def approval_failed(self, message: SagaMessage, context: SagaContext) -> None:
        self._rejected(message)

    async def on_rejected(self, rejection: Rejection, context: SagaContext) -> None:
        self.publish(
            "ordermaker",
            "make_order_rejected",
            {"orderId": self.data.order_id, "reason": rejection.reason, "code": rejection.code},
            saga_state=State.REJECTED,
        )

    def _rejected(self, message: SagaMessage) -> None:
        reason = message.get("reason")
        code = message.get("code")
        self.reject(
            reason if isinstance(reason, str) and reason else f"{message.name} received",
            code if isinstance(code, str) and code else message.name,
        )

    def _choose_vehicle_and_date(self) -> tuple[str, str]:
        """The best vehicle and the first free day: stands in for Pacco's vehicles and
        availability lookups, deterministic per order."""
        digest = hashlib.sha256(self.data.order_id.encode()).digest()
        vehicle = FLEET[digest[0] % len(FLEET)]
        day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1 + digest[1] % 7)
        return vehicle, dt.datetime.combine(day, dt.time(9), dt.UTC).isoformat()


def _ids_problem(order_id: str, customer_id: str, parcel_ids: list[Any]) -> str | None:
    """Why MakeOrder's ids cannot be used, or None: at most :data:`MAX_PARCELS` parcels, and
    every id an id by :func:`operations.auth.identity.id_problem`."""
    if len(parcel_ids) > MAX_PARCELS:
        return f"parcelIds must hold at most {MAX_PARCELS} ids"
    named = [("orderId", order_id), ("customerId", customer_id)]
    named += [(f"parcelIds[{n}]", parcel) for n, parcel in enumerate(parcel_ids)]
    for name, value in named:
        if not isinstance(value, str):
            return f"{name} must be a string"
        if (problem := id_problem(value)) is not None:
            return f"{name} {problem}"
    return None
