"""The entry of ``POST /orders`` in the route table; the wiring adds it to the OpenAPI document
when it serves the route."""

from __future__ import annotations

from operations.http.endpoints import NEEDS_TOKEN, Answer, Endpoint, problem
from operations.pacco.models import MakeOrder, OrderAccepted
from operations.sagas.openapi import (
    BAD_KEY,
    BROKER_DOWN,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_REFUSALS,
    SAGAS_OFF,
    TOO_LARGE,
)

ORDER_ENDPOINTS = (
    Endpoint(
        "post",
        "/orders",
        "Make an order: starts Pacco's order-maker saga for the caller",
        description="Publishes MakeOrder with a new operation id and answers once the broker"
        " confirmed it." + SAGAS_OFF,
        params=(IDEMPOTENCY_KEY,),
        body=MakeOrder,
        answers={
            202: Answer(
                "Accepted: watch the operation.",
                OrderAccepted,
                {
                    "Request-ID": "The operation id.",
                    "Resource-ID": "The order id.",
                    "Idempotent-Replayed": "`true` when the answer repeats an earlier request's"
                    " with the same Idempotency-Key.",
                },
            ),
            400: problem(
                f"`invalid_order`: the body is not a valid order; the reason names why. {BAD_KEY}"
            ),
            401: NEEDS_TOKEN,
            **IDEMPOTENCY_REFUSALS,
            413: TOO_LARGE,
            503: problem(
                f"{BROKER_DOWN} With an Idempotency-Key, also `store_unavailable` when Redis"
                " cannot be reached."
            ),
        },
    ),
)
