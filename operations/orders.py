"""``POST /orders``: starts Pacco's order-maker saga for the caller.

It publishes MakeOrder on the ``ordermaker`` exchange with a new correlation id (the operation
id), the caller's ``message_context`` and ``Saga: Pending``, and answers ``202`` once the broker
has confirmed it. The saga and the operation both start from that message. The publishing is
``POST /sagas/{name}``'s (:class:`operations.sagas.starts.SagaStarter`); what is Pacco's own is
the body it checks and the ``Resource-ID`` it answers with.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .api import Json, bearer_principal, problem
from .errors import BrokerUnavailable
from .sagas.ordermaking import MAX_PARCELS
from .sagas.starts import MAX_BODY_BYTES, SagaStarter, bounded_body
from .tokens import TokenVerifier


class InvalidOrder(ValueError):
    pass


class OrdersApi:
    def __init__(self, verifier: TokenVerifier, starter: SagaStarter) -> None:
        self.verifier = verifier
        self.starter = starter

    @property
    def routes(self) -> list[Route]:
        return [Route("/orders", self.make_order, methods=["POST"])]

    async def make_order(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        raw = await bounded_body(request)
        if raw is None:
            return problem(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        try:
            order = _order(raw)
        except InvalidOrder as error:
            return problem(400, "invalid_order", str(error))
        order_id = order["orderId"]
        try:
            operation_id = await self.starter.start(
                principal, "ordermaker", "make_order", order, resource_id=order_id
            )
        except BrokerUnavailable as error:
            return problem(503, error.code, error.reason)
        return Json(
            {"operationId": operation_id, "orderId": order_id},
            status_code=202,
            headers={"Request-ID": operation_id, "Resource-ID": order_id},
        )


def _order(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidOrder("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidOrder("the body must be a JSON object")
    fields = {key.lower(): value for key, value in body.items()}
    customer = fields.get("customerid")
    if not isinstance(customer, str) or not customer.strip():
        raise InvalidOrder("customerId is required")
    parcels = fields.get("parcelids")
    if parcels is None and fields.get("parcelid") is not None:
        parcels = [fields["parcelid"]]
    if (
        not isinstance(parcels, list)
        or not parcels
        or not all(isinstance(p, str) and p.strip() for p in parcels)
    ):
        raise InvalidOrder("parcelIds (a non-empty list of ids) or parcelId is required")
    if len(parcels) > MAX_PARCELS:
        raise InvalidOrder(f"at most {MAX_PARCELS} parcels per order")
    order_id = fields.get("orderid")
    if order_id is not None and (not isinstance(order_id, str) or not order_id.strip()):
        raise InvalidOrder("orderId must be a non-empty string when given")
    return {
        "orderId": (order_id or str(uuid.uuid4())).strip(),
        "customerId": customer.strip(),
        "parcelIds": list(dict.fromkeys(p.strip() for p in parcels)),
    }
