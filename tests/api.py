"""What a user of the HTTP API does in the tests: a bearer header, an order placed (and its saga
waited for), an operation read once it is recorded, a read that must answer 200."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support import eventually, uid


def bearer(token: str, **headers: str) -> dict[str, str]:
    """The headers of a request made with ``token`` (and any ``headers`` besides)."""
    return {"Authorization": f"Bearer {token}", **headers}


def order_body(parcels: int = 1, **fields: Any) -> dict[str, Any]:
    """An order (the body of ``POST /orders``) of a new customer for ``parcels`` new parcels, with
    any other ``fields``."""
    return {
        "customerId": uid(),
        "parcelIds": [uid() for _ in range(parcels)],
        **fields,
    }


def order_with_id() -> dict[str, Any]:
    """An order of one parcel that names its own order id."""
    return order_body(orderId=f"order-{uuid.uuid4().hex[:8]}")


async def place_order(
    http: httpx.AsyncClient, user_token: str, parcels: int = 1, **fields: Any
) -> str:
    """``POST /orders`` for a new customer and ``parcels`` new parcels (and any other ``fields``)
    as the user of ``user_token``: the operation id of the 202."""
    body = order_body(parcels, **fields)
    response = await http.post("/orders", json=body, headers=bearer(user_token))
    assert response.status_code == 202, response.text
    return str(response.json()["operationId"])


async def saga_started(http: httpx.AsyncClient, operation: str, user_token: str) -> None:
    """Wait until the saga of ``operation`` is there for its owner to read."""

    async def visible() -> bool:
        saga = await http.get(f"/operations/{operation}/saga", headers=bearer(user_token))
        return saga.status_code == 200

    await eventually(visible, f"the saga of operation {operation} to start")


async def started_order(http: httpx.AsyncClient, user_token: str) -> str:
    """A placed order whose saga has started (and, with no simulated services running, waits for
    OrderCreated): its operation id."""
    operation = await place_order(http, user_token)
    await saga_started(http, operation, user_token)
    return operation


async def recorded(http: httpx.AsyncClient, op: str, headers: dict[str, str]) -> httpx.Response:
    """The answer to ``GET /operations/{op}`` with ``headers`` once the operation is there."""

    async def read() -> httpx.Response | None:
        response = await http.get(f"/operations/{op}", headers=headers)
        return response if response.status_code == 200 else None

    return await eventually(read, f"operation {op} to be recorded")


async def answered(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The JSON document of the 200 answer to ``GET path`` with ``headers``."""
    response = await http.get(path, headers=headers)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document
