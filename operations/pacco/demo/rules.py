"""The rule table of the simulated Pacco services: which message each one answers, with what.

Names are Pacco's (``messages.json``): routing keys are snake_case message names, and every reply
goes to the exchange of the service that sends it.
"""

from __future__ import annotations

from dataclasses import dataclass

from operations.states import MessageKind


@dataclass(frozen=True)
class Reply:
    """How a simulated service answers one message.

    ``required`` body fields must be present (else the message is an invalid command); they and the
    ``optional`` ones present are copied into the reply's body.
    """

    message: str
    source: str
    success: str
    rejected: str | None
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    kind: MessageKind = MessageKind.COMMAND
    remembers_vehicle: bool = False
    finds_order_by: str | None = None
    """For an event without ``orderId``: the body field naming the vehicle whose order it is about
    (Pacco's orders service looks the order up by its reserved vehicle)."""

    @property
    def failure_code(self) -> str:
        return f"{self.message}_failed"

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional


@dataclass(frozen=True)
class SimulatedService:
    name: str
    exchange: str
    replies: tuple[Reply, ...]

    @property
    def queue(self) -> str:
        return f"demo.{self.name}"

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(reply.source for reply in self.replies)

    def rule(self, source: str, message: str) -> Reply | None:
        for reply in self.replies:
            if reply.message == message and reply.source == source:
                return reply
        return None

    def reason(self, reply: Reply) -> str:
        return f"{reply.message} was rejected by the simulated {self.name} service"


def _command(
    exchange: str,
    message: str,
    success: str,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    *,
    remembers_vehicle: bool = False,
) -> Reply:
    return Reply(
        message=message,
        source=exchange,
        success=success,
        rejected=f"{message}_rejected",
        required=required,
        optional=optional,
        remembers_vehicle=remembers_vehicle,
    )


ORDERS = SimulatedService(
    "orders",
    "orders",
    (
        _command("orders", "create_order", "order_created", ("orderId", "customerId")),
        _command("orders", "add_parcel_to_order", "parcel_added_to_order", ("orderId", "parcelId")),
        _command(
            "orders",
            "assign_vehicle_to_order",
            "vehicle_assigned_to_order",
            ("orderId", "vehicleId"),
            remembers_vehicle=True,
        ),
        _command("orders", "cancel_order", "order_canceled", ("orderId",), ("reason",)),
        Reply(
            message="resource_reserved",
            source="availability",
            success="order_approved",
            rejected="order_for_reserved_vehicle_not_found",
            optional=("orderId",),
            kind=MessageKind.EVENT,
            finds_order_by="resourceId",
        ),
    ),
)

AVAILABILITY = SimulatedService(
    "availability",
    "availability",
    (
        _command(
            "availability",
            "reserve_resource",
            "resource_reserved",
            ("resourceId", "dateTime"),
            ("orderId",),
        ),
        _command(
            "availability",
            "release_resource",
            "resource_reservation_released",
            ("resourceId",),
            ("dateTime", "orderId"),
        ),
        _command("availability", "add_resource", "resource_added", ("resourceId",)),
    ),
)

VEHICLES = SimulatedService(
    "vehicles",
    "vehicles",
    (
        _command("vehicles", "add_vehicle", "vehicle_added", ("vehicleId",)),
        _command("vehicles", "update_vehicle", "vehicle_updated", ("vehicleId",)),
        _command("vehicles", "delete_vehicle", "vehicle_deleted", ("vehicleId",)),
    ),
)

SERVICES = (ORDERS, VEHICLES, AVAILABILITY)


def failable(services: tuple[SimulatedService, ...] = SERVICES) -> frozenset[str]:
    """The commands ``--fail`` may name: those with a rejected reply."""
    return frozenset(
        reply.message
        for service in services
        for reply in service.replies
        if reply.kind is MessageKind.COMMAND and reply.rejected is not None
    )
