"""The entry of ``POST /orders`` in the route table; the wiring adds it to the OpenAPI document
when it serves the route."""

from __future__ import annotations

from operations.http.endpoints import NEEDS_TOKEN, Answer, Endpoint, problem
from operations.pacco.models import MakeOrder, OrderAccepted
from operations.sagas.openapi import BROKER_DOWN, SAGAS_OFF, TOO_LARGE

ORDER_ENDPOINTS = (
    Endpoint(
        "post",
        "/orders",
        "Make an order: starts Pacco's order-maker saga for the caller",
        description="Publishes MakeOrder with a new operation id and answers once the broker"
        " confirmed it." + SAGAS_OFF,
        body=MakeOrder,
        answers={
            202: Answer(
                "Accepted: watch the operation.",
                OrderAccepted,
                {"Request-ID": "The operation id.", "Resource-ID": "The order id."},
            ),
            400: problem("`invalid_order`: the body is not a valid order; the reason names why."),
            401: NEEDS_TOKEN,
            413: TOO_LARGE,
            503: problem(BROKER_DOWN),
        },
    ),
)
