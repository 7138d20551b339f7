"""What a simulated service answers to one delivered message: a routing key and a camelCase body.

Deciding never touches the broker, so the whole decision (including a seeded failure draw) is
made as the message arrives, in delivery order.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from operations.errors import OperationsError
from operations.pacco.demo.failures import FailurePlan
from operations.pacco.demo.rules import Reply, SimulatedService

ORDER_ID = "orderId"


class InvalidCommand(OperationsError):
    """A message's body is not a JSON object, or lacks a field its service needs."""

    code = "invalid_command"

    def __init__(self, field: str, reason: str, found: Mapping[str, str]) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.found = found


@dataclass(frozen=True)
class Decision:
    """What a simulated service publishes in answer to one message."""

    routing_key: str | None
    """None: nothing to publish (the message is invalid and has no rejected reply)."""
    body: Mapping[str, str]
    problem: str | None = None
    """Why the message could not be handled as it was sent (it is logged as a warning)."""


class VehicleAssignments:
    """The vehicles the simulated orders service assigned, so that a ResourceReserved without an
    ``orderId`` still finds its order, as Pacco's orders service finds it by vehicle.

    The same operation's assignment is preferred, so concurrent demo orders sharing a vehicle are
    not mixed up. Bounded, because the demo can run for days."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._by_operation: OrderedDict[tuple[str | None, str], str] = OrderedDict()
        self._by_vehicle: OrderedDict[str, str] = OrderedDict()

    def remember(self, operation_id: str | None, vehicle_id: str, order_id: str) -> None:
        self._by_operation[(operation_id, vehicle_id)] = order_id
        self._by_operation.move_to_end((operation_id, vehicle_id))
        self._by_vehicle[vehicle_id] = order_id
        self._by_vehicle.move_to_end(vehicle_id)
        while len(self._by_operation) > self._limit:
            self._by_operation.popitem(last=False)
        while len(self._by_vehicle) > self._limit:
            self._by_vehicle.popitem(last=False)

    def find(self, operation_id: str | None, vehicle_id: str | None) -> str | None:
        if vehicle_id is None:
            return None
        return self._by_operation.get((operation_id, vehicle_id)) or self._by_vehicle.get(
            vehicle_id
        )


def answer(
    service: SimulatedService,
    rule: Reply,
    body: bytes,
    operation_id: str | None,
    failures: FailurePlan,
    rng: random.Random,
    assignments: VehicleAssignments,
) -> Decision:
    try:
        fields = read_fields(body, rule)
    except InvalidCommand as error:
        rejected = {"code": error.code, "reason": error.reason, **error.found}
        return Decision(rule.rejected, rejected, problem=error.reason)

    echoed = {name: fields[name] for name in rule.fields if name in fields}
    if rule.finds_order_by is not None:
        return _approval(rule, rule.finds_order_by, fields, echoed, operation_id, assignments)
    if rule.rejected is not None and failures.fails(rule.message, rng):
        rejected = {"code": rule.failure_code, "reason": service.reason(rule), **echoed}
        return Decision(rule.rejected, rejected)
    if rule.remembers_vehicle:
        assignments.remember(operation_id, fields["vehicleId"], fields[ORDER_ID])
    return Decision(rule.success, echoed)


def _approval(
    rule: Reply,
    vehicle_field: str,
    fields: Mapping[str, str],
    echoed: dict[str, str],
    operation_id: str | None,
    assignments: VehicleAssignments,
) -> Decision:
    vehicle = fields.get(vehicle_field)
    order = echoed.get(ORDER_ID) or assignments.find(operation_id, vehicle)
    if order is not None:
        return Decision(rule.success, {**echoed, ORDER_ID: order})
    reason = f"no order has vehicle {vehicle!r} assigned" if vehicle else "no orderId to approve"
    found = {vehicle_field: vehicle} if vehicle else {}
    code = rule.rejected or "order_not_found"
    return Decision(rule.rejected, {"code": code, "reason": reason, **found}, reason)


def read_fields(body: bytes, rule: Reply) -> dict[str, str]:
    """The fields ``rule`` reads from a camelCase (or PascalCase) JSON body, by camelCase name."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidCommand("body", "not valid JSON", {}) from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise InvalidCommand("body", f"expected a JSON object, got {kind}", {}) from None
    folded = {str(key).lower(): value for key, value in document.items()}
    wanted = rule.fields + ((rule.finds_order_by,) if rule.finds_order_by else ())
    found: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for name in wanted:
        value = folded.get(name.lower())
        if isinstance(value, str) and value.strip():
            found[name] = value
        elif value is not None and value != "":
            problems.append((name, f"expected a string, got {type(value).__name__}"))
        elif name in rule.required:
            problems.append((name, "is missing"))
    if problems:
        name, reason = problems[0]
        raise InvalidCommand(f"body.{name}", reason, found)
    return found
