"""Where sagas stand on their path: one instance's step timings, a type's load over its path
(``GET /sagas/types/{name}/steps``), and a cancellation with its reason, against the real
service (no simulated services run here, so orders wait for ``order_created``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from operations.pacco.ordermaking import OrderMakingSaga
from operations.sagas import SagaStatus
from operations.sagas.objectives import waiting_for, waiting_since
from operations.sagas.progress import step_seconds
from operations.sagas.records import SagaRecord, StepRecord
from tests.api import bearer, place_order
from tests.support import RunningService, eventually

Token = Callable[..., str]


def test_each_step_took_the_time_from_the_step_before() -> None:
    steps = [
        StepRecord("make_order", "m1", 100.0),
        StepRecord("order_created", "m2", 102.5),
        StepRecord("parcel_added_to_order", "m3", 103.0),
        StepRecord("parcel_added_to_order", "m4", 106.0),
    ]
    record = SagaRecord("order_making", "s", SagaStatus.PENDING, {}, steps=steps)
    assert step_seconds(OrderMakingSaga, record) == {
        "make_order": 0.0,
        "order_created": 2.5,
        "parcel_added_to_order": 3.5,
    }
    assert waiting_for(OrderMakingSaga, record) == "vehicle_assigned_to_order"
    assert waiting_since(record) == 106.0
    record.status = SagaStatus.REJECTED
    assert waiting_for(OrderMakingSaga, record) is None
    assert waiting_since(record) is None


async def test_a_types_load_counts_the_sagas_waiting_at_each_step(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    user, admin = str(uuid.uuid4()), token("ops", "admin")
    operations = [await place_order(http, token(user)) for _ in range(3)]

    async def load() -> dict[str, Any] | None:
        response = await http.get("/sagas/types/order_making/steps", headers=bearer(admin))
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document if document["sampled"] == 3 else None

    document = await eventually(load, "the three sagas in the load")
    steps = {step["message"]: step for step in document["steps"]}
    assert list(steps) == OrderMakingSaga.path
    assert steps["order_created"]["waiting"] == 3
    assert steps["order_created"]["longestWaitSeconds"] >= 0
    assert (steps["make_order"]["samples"], steps["make_order"]["medianSeconds"]) == (3, 0.0)
    assert steps["order_approved"] == {
        "message": "order_approved",
        "waiting": 0,
        "longestWaitSeconds": None,
        "medianSeconds": None,
        "samples": 0,
        "overdue": 0,
        "objectiveSeconds": 30.0,
    }
    assert (document["saga"], document["capped"]) == ("order_making", False)

    saga = await http.get(f"/operations/{operations[0]}/saga", headers=bearer(token(user)))
    assert saga.json()["cancellable"] is True
    assert saga.json()["waitingFor"] == "order_created"
    assert saga.json()["waitingSince"] == saga.json()["steps"][-1]["at"]
    assert saga.json()["stepSeconds"] == {"make_order": 0.0}

    user_load = await http.get("/sagas/types/order_making/steps", headers=bearer(token(user)))
    assert user_load.status_code == 403
    unknown = await http.get("/sagas/types/no_such/steps", headers=bearer(admin))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "saga_not_found")


async def test_an_admin_cancels_with_a_reason(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    user, admin = str(uuid.uuid4()), token("ops", "admin")
    operation = await place_order(http, token(user))
    url = f"/operations/{operation}/cancel"

    async def started() -> bool:
        response = await http.get(f"/operations/{operation}/saga", headers=bearer(admin))
        return response.status_code == 200

    await eventually(started, "the saga to start")
    for bad in (b"[1]", b'{"reason": 3}', b'{"why": "x"}', b'{"reason": "' + b"x" * 501 + b'"}'):
        refused = await http.post(url, content=bad, headers=bearer(admin))
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_body"), bad
    metrics = service.service.metrics.saga_cancels
    assert metrics.value(outcome="invalid_body") == 4
    accepted = await http.post(url, json={"reason": "the customer phoned"}, headers=bearer(admin))
    assert accepted.status_code == 202
    assert accepted.json() == {"operationId": operation, "cancelled": True}
    assert metrics.value(outcome="accepted") == 1

    async def rejected() -> dict[str, Any] | None:
        response = await http.get(f"/operations/{operation}/saga", headers=bearer(token(user)))
        saga: dict[str, Any] = response.json()
        return saga if saga["status"] == "rejected" else None

    saga = await eventually(rejected, "the cancelled saga to be compensated")
    assert saga["reason"] == "cancelled by an admin, ops: the customer phoned"
    assert (saga["code"], saga["cancellable"], saga["waitingFor"]) == ("cancelled", False, None)
    assert saga["waitingSince"] is None
