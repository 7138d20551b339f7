"""The guide's example (docs/sagas-guide.md, the same code as examples/delivery.py) run through
``operations serve`` as a process from a temporary directory on ``PYTHONPATH``: its commands
answered by a double of the Deliveries service over the broker, started over HTTP, completed,
cancelled mid-flight and stopped by its deadline, with its compensation on the wire."""

from __future__ import annotations

import asyncio
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
    """The Python block of the guide's "Writing and running your own saga"."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("\n## Writing and running your own saga\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
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
                "businessKeys": ["delivery_id", "parcel_id"],
                "objectives": {
                    "delivery_started": 60.0,
                    "registration_added_to_delivery": 3600.0,
                },
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

    async def compensated() -> dict[str, Any] | None:
        saga = (await http.get(f"/operations/{operation}/saga", headers=bearer)).json()
        return saga if saga["status"] == "rejected" else None

    saga = await eventually(compensated, "the saga to end its compensation")
    assert saga["code"] == code
    assert saga["path"][0] == {"message": "start_delivery", "status": "compensated"}


@pytest.mark.slow
async def test_two_serve_processes_sharing_the_saga_queue_lose_nothing_under_racing_cancels(
    tmp_path: Path,
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: AbstractRobustConnection,
    token: Token,
) -> None:
    """Two ``operations serve`` processes share the saga queue. Deliveries are started on one
    and cancelled on the other while Deliveries answers their steps, so each cancel races the
    steps. Whatever wins, each saga ends one way only: cancelled (202), with exactly one
    FailDelivery and no CompleteDelivery, or completed (409), with exactly one CompleteDelivery
    and no FailDelivery; and its operation agrees."""
    (tmp_path / "delivery.py").write_text(guide_code(), encoding="utf-8")
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "OPERATIONS_SAGA_TYPES": "delivery:ParcelDeliverySaga",
    }
    bearer = {"Authorization": f"Bearer {token('racer')}"}
    async with (
        serve_process(settings, env) as first,
        serve_process(settings, env) as second,
        ServiceDouble(amqp, deliveries_answers()) as deliveries,
        httpx.AsyncClient(base_url=first.url, timeout=30) as one,
        httpx.AsyncClient(base_url=second.url, timeout=30) as other,
    ):
        cancels: dict[str, int] = {}
        for number in range(16):
            started = await one.post(
                "/sagas/parcel_delivery",
                json={"deliveryId": f"d-{number}", "parcelId": f"p-{number}"},
                headers=bearer,
            )
            operation = started.json()["operationId"]
            if number % 4:
                await asyncio.sleep(0.01 * number)
            cancel = await other.post(f"/operations/{operation}/cancel", headers=bearer)
            cancels[operation] = cancel.status_code

        async def final(operation: str) -> dict[str, Any] | None:
            saga = await other.get(f"/operations/{operation}/saga", headers=bearer)
            if saga.status_code != 200 or saga.json()["status"] not in ("completed", "rejected"):
                return None
            record = (await one.get(f"/operations/{operation}", headers=bearer)).json()
            return {"saga": saga.json(), "record": record} if record["state"] != "pending" else None

        for operation, status in cancels.items():
            ended = await eventually(
                lambda operation=operation: final(operation),  # type: ignore[misc]
                f"{operation} to end",
                timeout=30,
            )
            sent = deliveries.commands(operation)
            if status == 202:
                assert ended["saga"]["code"] == "cancelled", ended
                assert ended["record"]["code"] == "cancelled", ended
                assert sent.count("fail_delivery") == 1 and "complete_delivery" not in sent, sent
            else:
                assert status == 409, status
                assert ended["saga"]["status"] == "completed", ended
                assert ended["record"]["state"] == "completed", ended
                assert sent.count("complete_delivery") == 1 and "fail_delivery" not in sent, sent
        assert 202 in cancels.values(), "no cancel reached a running saga"
