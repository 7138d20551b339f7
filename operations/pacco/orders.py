"""``POST /orders``: starts Pacco's order-maker saga for the caller.

It publishes MakeOrder on the ``ordermaker`` exchange with a new correlation id (the operation
id), the caller's ``message_context`` and ``Saga: Pending``, and answers ``202`` once the broker
has confirmed it. The saga and the operation both start from that message. The publishing is
``POST /sagas/{name}``'s (:class:`operations.sagas.http_start.SagaStarter`); what is Pacco's own is
the body it checks and the ``Resource-ID`` it answers with. So is ``Idempotency-Key``
(:mod:`operations.sagas.idempotency`): a repeat answers with the first order's ids.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from operations import documents
from operations.auth.tokens import TokenVerifier
from operations.errors import BrokerUnavailable, InvalidBody
from operations.http.models import bounded_body, read_body
from operations.http.responses import Json, bearer_principal, problem
from operations.pacco.models import MakeOrder, OrderAccepted
from operations.sagas.http_start import REPLAYED, SagaStarter
from operations.sagas.idempotency import HEADER, IdempotentRequest, idempotency_key
from operations.sagas.models import MAX_BODY_BYTES


class InvalidOrder(InvalidBody):
    """A ``POST /orders`` body does not fit its model."""

    code = "invalid_order"


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
        key = idempotency_key(request.headers.getlist(HEADER))
        raw = await bounded_body(request, MAX_BODY_BYTES)
        order = _order(read_body(raw, MakeOrder, InvalidOrder, lenient=True))
        repeatable = (
            None
            if key is None
            else IdempotentRequest.of("orders", "/orders", key, documents.decode(raw))
        )
        try:
            started = await self.starter.start(
                principal,
                "ordermaker",
                "make_order",
                order,
                resource_id=order["orderId"],
                request=repeatable,
            )
        except BrokerUnavailable as error:
            return problem(503, error.code, error.reason)
        operation_id, order_id = started.operation_id, started.resource_id or order["orderId"]
        headers = {"Request-ID": operation_id, "Resource-ID": order_id}
        if started.replayed:
            headers.update(REPLAYED)
        return Json(OrderAccepted(operation_id, order_id), status_code=202, headers=headers)


def _order(order: MakeOrder) -> dict[str, Any]:
    """The MakeOrder message's body: ids trimmed, parcels once each, a new order id if none."""
    parcels = order.parcel_ids or [order.parcel_id or ""]
    return {
        "orderId": (order.order_id or str(uuid.uuid4())).strip(),
        "customerId": order.customer_id.strip(),
        "parcelIds": list(dict.fromkeys(parcel.strip() for parcel in parcels)),
    }
