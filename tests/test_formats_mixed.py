"""All four wire formats on one queue: one user's operations, one from each bus, move through
pending to their end side by side, seen over HTTP and by the user's own Socket.IO client, on a
classic and on a quorum queue; and a message mis-sent to another bus's exchange is dead-lettered
with the reason, not misread."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection
from cloudevents.core.v1.event import CloudEvent

from operations.amqp.queues import QueueType
from operations.settings import Settings
from tests.api import bearer
from tests.dead_letter_support import letters
from tests.fixtures.cloudevents import amqp_structured, rabbitmq_binary
from tests.fixtures.masstransit import Sent, fault, published
from tests.hub_support import live_clients
from tests.nservicebus_support import publish as publish_nservicebus
from tests.support import RunningService, eventually, start_service

Token = Callable[..., str]

CONVEY_EXCHANGE = "mixed.orders"
CE_EXCHANGE = "mixed.events"
SUBMIT, SUBMITTED = "Mixed.Orders.SubmitOrder", "Mixed.Orders.OrderSubmitted"
CREATE, REJECTED = "com.example.mixed.CreateOrder", "com.example.mixed.CreateOrderRejected"
CATALOGUE = {
    "convey-orders": {
        "exchange": CONVEY_EXCHANGE,
        "commands": ["create_order"],
        "events": ["order_created"],
    },
    "masstransit-orders": {"format": "masstransit", "commands": [SUBMIT], "events": [SUBMITTED]},
    "nservicebus-shop": {
        "format": "nservicebus",
        "commands": ["Shop.Messages.PlaceOrder"],
        "events": ["Shop.Messages.OrderPlaced"],
    },
    "cloudevents-orders": {
        "format": "cloudevents",
        "exchange": CE_EXCHANGE,
        "commands": [CREATE],
        "rejectedEvents": [REJECTED],
    },
}


@pytest.fixture(params=[QueueType.CLASSIC, QueueType.QUORUM])
async def running(
    request: pytest.FixtureRequest,
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> AsyncIterator[RunningService]:
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(CATALOGUE), encoding="utf-8")
    tracked = replace(
        settings,
        queue_type=request.param,
        sagas=False,
        dead_letter_keep=True,
        messages_file=path,
    )
    async with start_service(tracked) as service:
        yield service


class Buses:
    """Publishes as each bus does, on one channel with publisher confirms."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel

    async def convey(self, name: str, op: str, user: str, **body: Any) -> None:
        context = json.dumps({"user": {"id": user}, "name": "order"})
        exchange = await self.channel.get_exchange(CONVEY_EXCHANGE)
        message = aio_pika.Message(
            json.dumps(body).encode(),
            correlation_id=op,
            message_id=str(uuid.uuid4()),
            headers={"message_context": context},
        )
        await exchange.publish(message, routing_key=name)

    async def masstransit(self, sent: Sent) -> None:
        exchange = await self.channel.get_exchange(sent.exchange)
        await exchange.publish(sent.message(), routing_key="")

    async def nservicebus(self, fixture: str, op: str, user: str) -> None:
        await publish_nservicebus(self.channel, fixture, op, user)

    async def cloudevent(self, message: aio_pika.Message, type_: str) -> None:
        exchange = await self.channel.get_exchange(CE_EXCHANGE)
        await exchange.publish(message, routing_key=type_)


def cloudevent(type_: str, op: str, user: str, data: Any = None) -> CloudEvent:
    return CloudEvent(
        {"type": type_, "source": "/orders", "correlationid": op, "authid": user}, data
    )


async def test_one_users_operations_from_four_buses_end_over_http_and_socket_io(
    running: RunningService, amqp: AbstractRobustConnection, token: Token
) -> None:
    user = str(uuid.uuid4())
    owner = bearer(token(user))
    ops = {bus: str(uuid.uuid4()) for bus in ("convey", "masstransit", "nservicebus", "ce")}
    submit = published(
        SUBMIT,
        {"orderId": ops["masstransit"]},
        conversation_id=ops["masstransit"],
        headers={"UserId": user},
    )
    async with (
        live_clients(running.url) as clients,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
        amqp.channel(publisher_confirms=True) as channel,
    ):
        live = clients()
        await live.connect(auth={"token": token(user)})
        buses = Buses(channel)
        # Every operation starts, interleaved on the one queue...
        await buses.convey("create_order", ops["convey"], user)
        await buses.masstransit(submit)
        await buses.nservicebus("place_order", ops["nservicebus"], user)
        await buses.cloudevent(amqp_structured(cloudevent(CREATE, ops["ce"], user)), CREATE)
        for op in ops.values():
            assert (await live.wait_for_state(op, "pending"))["userId"] == user
        # ...and each ends its own bus's way.
        await buses.convey("order_created", ops["convey"], user)
        failed = fault(submit, SUBMIT, "System.TimeoutException", "The warehouse did not answer")
        await buses.masstransit(failed)
        await buses.nservicebus("order_placed", ops["nservicebus"], user)
        refused = cloudevent(
            REJECTED, ops["ce"], user, {"code": "out_of_stock", "reason": "No more blue mugs"}
        )
        await buses.cloudevent(rabbitmq_binary(refused), REJECTED)

        ends = {
            "convey": ("completed", None, None, "order"),
            "masstransit": (
                "rejected",
                "TimeoutException",
                "The warehouse did not answer",
                "submit_order_fault",
            ),
            "nservicebus": ("completed", None, None, "order_placed"),
            "ce": ("rejected", "out_of_stock", "No more blue mugs", "create_order_rejected"),
        }
        for bus, (state, code, reason, name) in ends.items():
            pushed = await live.wait_for_state(ops[bus], state)
            answered = (await http.get(f"/operations/{ops[bus]}", headers=owner)).json()
            for record in (pushed, answered):
                assert (record["state"], record["code"], record["reason"], record["name"]) == (
                    state,
                    code,
                    reason,
                    name,
                ), bus
                assert record["userId"] == user
            assert [r["state"] for r in live.records(ops[bus])] == ["pending", state], bus

        listed = (await http.get("/operations", headers=owner)).json()["items"]
        assert {item["id"] for item in listed} == set(ops.values())


async def test_a_message_sent_to_another_buses_exchange_is_dead_lettered_not_misread(
    running: RunningService, amqp: AbstractRobustConnection, token: Token
) -> None:
    admin = bearer(token("ops", "admin"))
    user, op = str(uuid.uuid4()), str(uuid.uuid4())
    envelope = published(SUBMIT, {"orderId": op}, conversation_id=op, headers={"UserId": user})
    async with (
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
        amqp.channel(publisher_confirms=True) as channel,
    ):
        buses = Buses(channel)
        # A MassTransit envelope routed to Convey's exchange under a Convey name, and a Convey
        # message routed to the CloudEvents exchange under a listed type.
        convey_exchange = await channel.get_exchange(CONVEY_EXCHANGE)
        await convey_exchange.publish(envelope.message(), routing_key="create_order")
        await buses.cloudevent(
            aio_pika.Message(b"{}", correlation_id=op, headers={"message_context": "{}"}), CREATE
        )

        async def both() -> list[dict[str, Any]] | None:
            found = await letters(http, admin)
            return found if len(found) >= 2 else None

        reasons = sorted(letter["reason"] for letter in await eventually(both, "2 dead letters"))
        assert "a MassTransit message" in reasons[0] and "Convey" in reasons[0]
        assert "not a CloudEvent" in reasons[1] and "Convey" in reasons[1]
        assert (await http.get(f"/operations/{op}", headers=admin)).status_code == 404
