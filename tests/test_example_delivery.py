"""The guide's example (docs/sagas-guide.md, the same code as examples/delivery.py) run through
``operations serve`` as a process from a temporary directory on ``PYTHONPATH``: its commands
answered by a double of the Deliveries service over the broker, started over HTTP, completed,
cancelled mid-flight and stopped by its deadline, with its compensation on the wire."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.settings import Settings
from tests.doubles import Answer, ServiceDouble
from tests.support import ServeProcess, eventually, serve_process

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "sagas-guide.md"
Token = Callable[..., str]


def guide_code() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    return str(code)


def test_the_guide_shows_the_example_as_it_is() -> None:
    assert guide_code() == (ROOT / "examples" / "delivery.py").read_text(encoding="utf-8")


def deliveries_answers() -> list[Answer]:
    """Deliveries as Pacco runs it, except that it never registers anything for a delivery
    whose id starts with ``slow-``."""

    def registration(body: dict[str, Any]) -> dict[str, Any] | None:
        if str(body["deliveryId"]).startswith("slow-"):
            return None
        return {"deliveryId": body["deliveryId"], "description": body["description"]}

    return [
        Answer("deliveries", "start_delivery", "delivery_started"),
        Answer(
            "deliveries",
            "add_delivery_registration",
            "registration_added_to_delivery",
            registration,
        ),
        Answer("deliveries", "complete_delivery", "delivery_completed"),
        Answer("deliveries", "fail_delivery", None),
    ]


@pytest.fixture
async def served(
    tmp_path: Path, settings: Settings, redis_client: aioredis.Redis, amqp: object
) -> AsyncIterator[ServeProcess]:
    (tmp_path / "delivery.py").write_text(guide_code(), encoding="utf-8")
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "OPERATIONS_SAGA_TYPES": "delivery:ParcelDeliverySaga",
        "DELIVERY_DEADLINE_SECONDS": "3",
    }
    async with serve_process(settings, env) as process:
        yield process


async def test_the_example_delivery_runs_in_serve(
    served: ServeProcess, amqp: AbstractRobustConnection, token: Token
) -> None:
    user = str(uuid.uuid4())
    bearer = {"Authorization": f"Bearer {token(user)}"}
    async with (
        ServiceDouble(amqp, deliveries_answers()) as deliveries,
        httpx.AsyncClient(base_url=served.url, timeout=30) as http,
    ):
        types = (await http.get("/sagas/types", headers=bearer)).json()["items"]
        assert types == [
            {
                "name": "parcel_delivery",
                "start": ["start_delivery"],
                "path": ["start_delivery", "delivery_started", "registration_added_to_delivery"],
                "compensations": ["start_delivery"],
                "httpStart": "start_delivery",
            }
        ]

        # Delivered: started over HTTP, waited for, completed.
        done = await http.post(
            "/sagas/parcel_delivery",
            json={"deliveryId": "d-1", "parcelId": "p-1"},
            headers={**bearer, "Prefer": "wait=20"},
        )
        assert done.status_code == 200, served.logs()
        assert (done.json()["state"], done.json()["name"]) == ("completed", "complete_delivery")
        operation = done.json()["id"]
        assert deliveries.commands(operation) == [
            "start_delivery",
            "add_delivery_registration",
            "complete_delivery",
        ]
        saga = (await http.get(f"/operations/{operation}/saga", headers=bearer)).json()
        assert [p["status"] for p in saga["path"]] == ["done", "done", "done"]
        assert saga["data"]["stage"] == "delivered"
        assert saga["data"]["registrations"][0]["description"] == "picked up by the courier"

        # Cancelled while the registration is awaited: the compensation fails the delivery.
        slow = await http.post(
            "/sagas/parcel_delivery",
            json={"deliveryId": "slow-1", "parcelId": "p-2"},
            headers=bearer,
        )
        cancelled_op = slow.json()["operationId"]

        async def started() -> bool:
            one = await http.get(f"/operations/{cancelled_op}/saga", headers=bearer)
            return one.status_code == 200 and one.json()["data"]["stage"] == "on_its_way"

        await eventually(started, "the slow delivery to start")
        cancel = await http.post(f"/operations/{cancelled_op}/cancel", headers=bearer)
        assert cancel.status_code == 202, cancel.text
        await assert_failed(http, bearer, deliveries, cancelled_op, "cancelled")

        # Missed its deadline (3 s): rejected and compensated the same way.
        late = await http.post(
            "/sagas/parcel_delivery",
            json={"deliveryId": "slow-2", "parcelId": "p-3"},
            headers={**bearer, "Prefer": "wait=20"},
        )
        assert late.status_code == 200, served.logs()
        assert (late.json()["state"], late.json()["code"]) == ("rejected", "deadline_exceeded")
        await assert_failed(http, bearer, deliveries, late.json()["id"], "deadline_exceeded")


async def assert_failed(
    http: httpx.AsyncClient,
    bearer: dict[str, str],
    deliveries: ServiceDouble,
    operation: str,
    code: str,
) -> None:
    async def rejected() -> dict[str, Any] | None:
        record = (await http.get(f"/operations/{operation}", headers=bearer)).json()
        return record if record["state"] == "rejected" else None

    record = await eventually(rejected, f"the delivery to be {code}", timeout=20)
    assert (record["code"], record["name"]) == (code, "fail_delivery")
    (failed,) = deliveries.bodies(operation, "fail_delivery")
    assert failed["code"] == code
    saga = (await http.get(f"/operations/{operation}/saga", headers=bearer)).json()
    assert (saga["status"], saga["code"]) == ("rejected", code)
    assert saga["path"][0] == {"message": "start_delivery", "status": "compensated"}
