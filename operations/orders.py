"""``POST /orders``: starts Pacco's order-maker saga for the caller.

It publishes MakeOrder on the ``ordermaker`` exchange with a new correlation id (the operation
id), the caller's ``message_context`` and ``Saga: Pending``, and answers ``202`` once the broker
has confirmed it. The saga and the operation both start from that message.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from aiormq.exceptions import AMQPError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .api import Json, bearer_principal, problem
from .identity import ADMIN_ROLE
from .publisher import AmqpPublisher
from .sagas.ordermaking import MAX_PARCELS
from .states import State
from .tokens import TokenVerifier

MAX_BODY_BYTES = 65_536


class InvalidOrder(ValueError):
    pass


class OrdersApi:
    def __init__(
        self, verifier: TokenVerifier, publisher: Callable[[], AmqpPublisher | None]
    ) -> None:
        self.verifier = verifier
        self.publisher = publisher

    @property
    def routes(self) -> list[Route]:
        return [Route("/orders", self.make_order, methods=["POST"])]

    async def make_order(self, request: Request) -> Response:
        principal = await bearer_principal(request, self.verifier)
        assert principal is not None
        raw = await _bounded_body(request)
        if raw is None:
            return problem(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        try:
            order = _order(raw)
        except InvalidOrder as error:
            return problem(400, "invalid_order", str(error))
        publisher = self.publisher()
        if publisher is None:
            return problem(503, "broker_unavailable", "the message broker is not connected yet")
        operation_id = str(uuid.uuid4())
        order_id = order["orderId"]
        context = {
            "correlationId": operation_id,
            "user": {
                "id": principal.user_id,
                "isAuthenticated": True,
                "role": ADMIN_ROLE if principal.is_admin else "user",
                "claims": {},
            },
            "name": "make_order",
            "resourceId": order_id,
            "traceId": uuid.uuid4().hex,
            "connectionId": None,
            "createdAt": dt.datetime.now(dt.UTC).isoformat(),
        }
        try:
            await publisher.publish(
                "ordermaker",
                "make_order",
                order,
                correlation_id=operation_id,
                message_id=uuid.uuid4().hex,
                message_context=context,
                saga=State.PENDING,
            )
        except (AMQPError, ConnectionError, TimeoutError, RuntimeError):
            return problem(503, "broker_unavailable", "the order could not be handed to the broker")
        return Json(
            {"operationId": operation_id, "orderId": order_id},
            status_code=202,
            headers={"Request-ID": operation_id, "Resource-ID": order_id},
        )


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it is known to exceed the limit: it is never read whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


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
