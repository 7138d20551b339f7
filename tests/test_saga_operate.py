"""Operating sagas at scale, through ``operations serve`` on the real servers: a saga found by its
business key, flagged overdue and cleared when its step arrives (gauge, log, ops room, list),
a bulk cancel of 1,000 sagas by filter that leaves 1,000 others untouched (dry run first), and a
retry whose re-published command moves a stuck saga on."""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from operations.settings import Settings
from tests.live import LiveClient
from tests.scrape import Scrape
from tests.support import Publisher, ServeProcess, eventually, serve_process

Token = Callable[..., str]

SHIPPING = textwrap.dedent(
    """
    from dataclasses import dataclass

    from operations.sagas import Saga, SagaContext, SagaMessage, start, step


    @dataclass
    class ShippingData:
        order_id: str = ""
        batch: str = ""


    class ShippingSaga(Saga[ShippingData]):
        name = "shipping"
        data_type = ShippingData
        http_start = "start_delivery"
        path = ["start_delivery", "delivery_completed"]
        business_keys = ("order_id", "batch")

        @start("start_delivery")
        async def begin(self, message: SagaMessage, context: SagaContext) -> None:
            self.data.order_id = str(message.get("orderId") or "")
            self.data.batch = str(message.get("batch") or "")
            self.publish("deliveries", "complete_delivery", {"deliveryId": self.data.order_id})

        @step("delivery_completed")
        async def delivered(self, message: SagaMessage, context: SagaContext) -> None:
            self.complete()
    """
)
OBJECTIVE = 2.0


@pytest.fixture
async def served(
    tmp_path: Path, settings: Settings, redis_client: aioredis.Redis, amqp: object
) -> AsyncIterator[ServeProcess]:
    (tmp_path / "shipping.py").write_text(SHIPPING, encoding="utf-8")
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "OPERATIONS_SAGA_TYPES": "shipping:ShippingSaga",
        "OPERATIONS_SAGA_OBJECTIVES": f"shipping.delivery_completed={OBJECTIVE}",
        "OPERATIONS_SAGA_RETRY_WINDOW_SECONDS": "30",
    }
    async with serve_process(settings, env) as process:
        yield process


@pytest.fixture
async def deliveries(
    amqp: AbstractRobustConnection, settings: Settings
) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """The Deliveries service's queue for ``complete_delivery``, read by hand."""
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        "deliveries", aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(f"{settings.queue}.deliveries", exclusive=True)
    await queue.bind(exchange, routing_key="complete_delivery")
    yield queue
    await channel.close()


def all_logs(served: ServeProcess) -> str:
    served.log.seek(0)
    text: str = served.log.read().decode("utf-8", "replace")
    return text


async def start(http: httpx.AsyncClient, headers: dict[str, str], **body: str) -> str:
    response = await http.post("/sagas/shipping", json=body, headers=headers)
    assert response.status_code == 202, response.text
    operation: str = response.json()["operationId"]
    return operation


async def saga_of(http: httpx.AsyncClient, headers: dict[str, str], op: str) -> dict[str, Any]:
    response = await http.get(f"/operations/{op}/saga", headers=headers)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def next_command(queue: aio_pika.abc.AbstractQueue) -> AbstractIncomingMessage:
    async def got() -> AbstractIncomingMessage | None:
        return await queue.get(fail=False, no_ack=True)

    return await eventually(got, "the complete_delivery command in the Deliveries queue")


async def test_a_saga_is_found_by_its_order_id(
    served: ServeProcess, deliveries: aio_pika.abc.AbstractQueue, token: Token
) -> None:
    user, admin = {"Authorization": f"Bearer {token('u1')}"}, token("ops", "admin")
    as_admin = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        order = f"order-{uuid.uuid4().hex[:8]}"
        op = await start(http, user, orderId=order, batch="b-1")
        await start(http, user, orderId=f"other-{order}", batch="b-1")

        async def found() -> list[dict[str, Any]] | None:
            response = await http.get("/sagas", params={"key": order}, headers=as_admin)
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["items"]
            return items or None

        (saga,) = await eventually(found, "the saga by its order id")
        assert (saga["id"], saga["correlationId"], saga["status"]) == (op, op, "pending")
        assert saga["businessKeys"] == {"order_id": order, "batch": "b-1"}
        assert saga["waitingFor"] == "delivery_completed"
        assert saga["objectiveSeconds"] == OBJECTIVE

        async def both() -> bool:
            response = await http.get("/sagas", params={"key": "b-1"}, headers=as_admin)
            return len(response.json()["items"]) == 2

        await eventually(both, "the two sagas of batch b-1")
        nobody = await http.get("/sagas", params={"key": "no-such-order"}, headers=as_admin)
        assert nobody.json()["items"] == []
        refused = await http.get("/sagas", params={"key": order}, headers=user)
        assert refused.status_code == 403
        too_long = await http.get("/sagas", params={"key": "x" * 201}, headers=as_admin)
        assert too_long.status_code == 400


async def test_a_saga_is_flagged_overdue_and_cleared_when_its_step_arrives(
    served: ServeProcess,
    deliveries: aio_pika.abc.AbstractQueue,
    publisher: Publisher,
    token: Token,
) -> None:
    user, admin = {"Authorization": f"Bearer {token('u2')}"}, token("ops", "admin")
    as_admin = {"Authorization": f"Bearer {admin}"}
    dashboard = LiveClient(served.url)
    await dashboard.connect({"token": admin})
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            op = await start(http, user, orderId="late-1")

            async def gauge() -> float | None:
                page = Scrape((await http.get("/metrics")).text)
                return page.value(
                    "operations_sagas_overdue", saga="shipping", step="delivery_completed"
                )

            assert (await saga_of(http, as_admin, op))["overdue"] is False
            await eventually(lambda: _equals(gauge(), 1.0), "the overdue gauge at 1", timeout=15)
            (listed,) = (await http.get("/sagas?overdue=true", headers=as_admin)).json()["items"]
            assert (listed["id"], listed["overdue"]) == (op, True)
            assert listed["overdueSince"] is not None
            await dashboard.wait_for(lambda c: bool(c.events("saga_overdue")), "saga_overdue")
            (told,) = dashboard.events("saga_overdue")
            assert told["operationId"] == op and told["step"] == "delivery_completed"
            warnings = [
                line
                for line in all_logs(served).splitlines()
                if f"saga shipping:{op} is overdue" in line
            ]
            assert len(warnings) == 1 and '"level":"warning"' in warnings[0], warnings

            await publisher.publish(
                "delivery_completed", op, user="u2", body={"deliveryId": "late-1"}
            )
            await eventually(lambda: _equals(gauge(), 0.0), "the overdue gauge back at 0")
            assert (await http.get("/sagas?overdue=true", headers=as_admin)).json()["items"] == []
            await dashboard.wait_for(
                lambda c: bool(c.events("saga_overdue_cleared")), "saga_overdue_cleared"
            )
            assert dashboard.events("saga_overdue_cleared")[0]["operationId"] == op
            assert (await saga_of(http, as_admin, op))["status"] == "completed"
            # Told once: passes after it became overdue logged nothing more for it.
            logged = all_logs(served).count(f"saga shipping:{op} is overdue")
            assert logged == 1
    finally:
        await dashboard.close()


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


@pytest.mark.slow
async def test_a_bulk_cancel_by_filter_takes_1000_sagas_and_leaves_1000_others(
    served: ServeProcess, publisher: Publisher, token: Token
) -> None:
    admin = token("ops-lead", "admin")
    as_admin = {"Authorization": f"Bearer {admin}"}
    doomed, kept = f"doomed-{uuid.uuid4().hex[:6]}", f"kept-{uuid.uuid4().hex[:6]}"
    operations: dict[str, list[str]] = {doomed: [], kept: []}
    for batch in (doomed, kept):
        for number in range(1_000):
            op = str(uuid.uuid4())
            operations[batch].append(op)
            body = {"orderId": f"{batch}-{number}", "batch": batch}
            await publisher.publish("start_delivery", op, user="u3", body=body)

    async with httpx.AsyncClient(base_url=served.url, timeout=120) as http:

        async def dry(batch: str) -> dict[str, Any]:
            asked = {"filter": {"key": batch, "saga": "shipping"}, "dryRun": True}
            response = await http.post("/sagas/cancel", json=asked, headers=as_admin)
            assert response.status_code == 200, response.text
            document: dict[str, Any] = response.json()
            return document

        async def all_running() -> bool:
            counts = [(await dry(batch))["matched"] for batch in (doomed, kept)]
            return counts == [1_000, 1_000]

        await eventually(all_running, "2,000 sagas running", timeout=120, every=0.5)
        before = {op: await saga_of(http, as_admin, op) for op in operations[kept][:20]}
        preview = await dry(doomed)
        assert (preview["acted"], preview["skipped"], preview["dryRun"]) == (0, 0, True)
        assert len(preview["sample"]) == 20
        assert {item["id"] for item in preview["sample"]} <= set(operations[doomed])
        assert (await dry(doomed))["matched"] == 1_000  # the dry run changed nothing

        asked = {"filter": {"key": doomed}, "reason": "Deliveries is down"}
        response = await http.post("/sagas/cancel", json=asked, headers=as_admin)
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["matched"], result["acted"], result["skipped"]) == (1_000, 1_000, 0)

        async def instances() -> dict[str, float]:
            page = Scrape((await http.get("/metrics")).text)
            return {
                status: page.value("operations_saga_instances", saga="shipping", status=status)
                or 0.0
                for status in ("pending", "compensating", "rejected")
            }

        async def ended() -> bool:
            return await instances() == {"pending": 1_000, "compensating": 0, "rejected": 1_000}

        await eventually(ended, "1,000 cancelled and 1,000 running", timeout=120, every=0.5)
        again = (await http.post("/sagas/cancel", json=asked, headers=as_admin)).json()
        assert (again["matched"], again["acted"]) == (0, 0)  # safe to repeat
        assert (await dry(kept))["matched"] == 1_000
        for op, saga in before.items():
            assert await saga_of(http, as_admin, op) == saga  # untouched, to the version
        cancelled = await saga_of(http, as_admin, operations[doomed][0])
        assert (cancelled["status"], cancelled["code"]) == ("rejected", "cancelled")
        assert "cancelled by an admin, ops-lead: Deliveries is down" in cancelled["reason"]
        audit = [
            line for line in all_logs(served).splitlines() if "cancelled by admin ops-lead" in line
        ]
        assert len(audit) == 1_000
        assert len({line.split("saga shipping:")[1].split()[0] for line in audit}) == 1_000


async def test_a_retry_republishes_the_lost_command_and_moves_the_saga_on(
    served: ServeProcess,
    deliveries: aio_pika.abc.AbstractQueue,
    publisher: Publisher,
    token: Token,
) -> None:
    user, admin = {"Authorization": f"Bearer {token('u4')}"}, token("ops", "admin")
    as_admin = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        op = await start(http, user, orderId="stuck-1")
        first = await next_command(deliveries)  # then lost: Deliveries purged its queue
        assert first.correlation_id == op

        refused = await http.post(f"/operations/{op}/saga/retry", headers=user)
        assert refused.status_code == 403
        retried = await http.post(f"/operations/{op}/saga/retry", headers=as_admin)
        assert retried.status_code == 202, retried.text
        assert retried.json() == {"operationId": op, "published": 1, "repeated": False}
        again = await next_command(deliveries)
        assert (again.correlation_id, again.message_id) == (op, first.message_id)
        assert again.headers.get("Saga") == first.headers.get("Saga")
        assert again.headers.get("message_context") == first.headers.get("message_context")
        assert again.body == first.body

        repeat = await http.post(f"/operations/{op}/saga/retry", headers=as_admin)
        assert repeat.json() == {"operationId": op, "published": 0, "repeated": True}
        await asyncio.sleep(0.5)  # a second copy, if one went out, would be queued by now
        assert await deliveries.get(fail=False) is None

        # Deliveries answers the command it now has: the saga moves on, and its operation ends.
        await publisher.publish("delivery_completed", op, user="u4", body={"deliveryId": "stuck-1"})

        async def completed() -> bool:
            return bool((await saga_of(http, as_admin, op))["status"] == "completed")

        await eventually(completed, "the retried saga to complete")
        record = (await http.get(f"/operations/{op}", headers=user)).json()
        assert record["state"] == "completed"
        finished = await http.post(f"/operations/{op}/saga/retry", headers=as_admin)
        assert (finished.status_code, finished.json()["code"]) == (409, "not_retryable")

        # By filter: a dry run counts, the run publishes once per saga, a repeat is held.
        stuck = [await start(http, user, orderId=f"stuck-{n}", batch="retry-me") for n in (2, 3)]
        for _ in stuck:
            await next_command(deliveries)
        asked: dict[str, Any] = {"filter": {"waitingFor": "delivery_completed", "key": "retry-me"}}

        async def both_waiting() -> bool:
            preview = await http.post(
                "/sagas/retry", json={**asked, "dryRun": True}, headers=as_admin
            )
            return bool(preview.json()["matched"] == 2)

        await eventually(both_waiting, "two sagas waiting")
        run = (await http.post("/sagas/retry", json=asked, headers=as_admin)).json()
        assert (run["matched"], run["acted"], run["skipped"]) == (2, 2, 0)
        resent = {(await next_command(deliveries)).correlation_id for _ in stuck}
        assert resent == set(stuck)
        held = (await http.post("/sagas/retry", json=asked, headers=as_admin)).json()
        assert (held["acted"], held["skipped"], held["skippedWhy"]) == (0, 2, {"repeated": 2})
        empty = await http.post("/sagas/retry", json={"filter": {}}, headers=as_admin)
        assert (empty.status_code, empty.json()["code"]) == (400, "invalid_body")
