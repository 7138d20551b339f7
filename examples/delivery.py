"""A parcel delivery saga over Pacco's ``deliveries`` exchange, run by ``operations serve``.

start_delivery ─▶ (Deliveries starts it) ─▶ delivery_started ─▶ AddDeliveryRegistration ─▶
registration_added_to_delivery ─▶ CompleteDelivery (the saga is done).

start_delivery_rejected, delivery_failed, a cancellation or the deadline (DELIVERY_DEADLINE_SECONDS)
reject it; the compensation of its start then fails the delivery (FailDelivery, Saga: Rejected).

Run it with ``PYTHONPATH=examples OPERATIONS_SAGA_TYPES=delivery:ParcelDeliverySaga``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from operations.sagas import Saga, SagaContext, SagaMessage, compensates, start, step
from operations.settings import read_setting, whole_number
from operations.states import State


class Stage(StrEnum):
    REQUESTED = "requested"
    ON_ITS_WAY = "on_its_way"
    DELIVERED = "delivered"


@dataclass
class Registration:
    description: str
    at: dt.datetime


@dataclass
class DeliveryData:
    delivery_id: str = ""
    parcel_id: str = ""
    stage: Stage = Stage.REQUESTED
    registrations: list[Registration] = field(default_factory=list)
    started_at: dt.datetime | None = None


@dataclass(frozen=True)
class DeliverySettings:
    deadline_seconds: int = 3_600


class ParcelDeliverySaga(Saga[DeliveryData]):
    name = "parcel_delivery"
    data_type = DeliveryData
    http_start = "start_delivery"  # POST /sagas/parcel_delivery publishes it
    path = ["start_delivery", "delivery_started", "registration_added_to_delivery"]  # noqa: RUF012
    business_keys = ("delivery_id", "parcel_id")  # GET /sagas?key=<a delivery or parcel id>
    objective_seconds = 3_600.0  # a saga waiting longer for a step is flagged overdue
    settings: DeliverySettings

    @classmethod
    def configure(cls, environ: Mapping[str, str]) -> DeliverySettings:
        seconds = read_setting(environ, "DELIVERY_DEADLINE_SECONDS", 3_600, whole_number(1, 86_400))
        return DeliverySettings(seconds)

    @start("start_delivery")
    async def requested(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.delivery_id = str(message.get("deliveryId") or "")
        self.data.parcel_id = str(message.get("parcelId") or "")
        if not self.data.delivery_id or not self.data.parcel_id:
            self.reject("start_delivery needs deliveryId and parcelId", "invalid_delivery")
            return
        self.set_deadline(self.settings.deadline_seconds)

    @compensates("start_delivery")
    async def fail(self, message: SagaMessage, context: SagaContext) -> None:
        rejection = self.rejection
        self.publish(
            "deliveries",
            "fail_delivery",
            {
                "deliveryId": self.data.delivery_id,
                "reason": rejection.reason if rejection else "the delivery was called off",
                "code": rejection.code if rejection else None,
            },
            saga_state=State.REJECTED,
        )

    @step("delivery_started", objective=60)
    async def started(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.stage = Stage.ON_ITS_WAY
        self.data.started_at = dt.datetime.now(dt.UTC)
        self.publish(
            "deliveries",
            "add_delivery_registration",
            {"deliveryId": self.data.delivery_id, "description": "picked up by the courier"},
        )

    @step("registration_added_to_delivery")
    async def registered(self, message: SagaMessage, context: SagaContext) -> None:
        description = str(message.get("description") or "")
        self.data.registrations.append(Registration(description, dt.datetime.now(dt.UTC)))
        self.data.stage = Stage.DELIVERED
        self.publish(
            "deliveries",
            "complete_delivery",
            {"deliveryId": self.data.delivery_id},
            saga_state=State.COMPLETED,
        )
        self.complete()

    @step("start_delivery_rejected")
    async def start_rejected(self, message: SagaMessage, context: SagaContext) -> None:
        self.reject(
            str(message.get("reason") or "rejected"), str(message.get("code") or "rejected")
        )

    @step("delivery_failed")
    async def failed(self, message: SagaMessage, context: SagaContext) -> None:
        self.reject(str(message.get("reason") or "the delivery failed"), "delivery_failed")
