"""One AMQP message, one reading: the saga intake reads a message's ``message_context``, its
``Saga`` header and its ids as the tracking path's envelope does (PascalCase or camelCase, str,
bytes or an AMQP table, any GUID spelling), so a saga and the operation it drives agree on the
operation's id and its owner."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.catalogue import Catalogue
from operations.amqp.settlements import Ack
from operations.envelope import context_trace_id, context_user_id
from operations.sagas import RedisSagaStore, Saga, SagaContext, SagaMessage, start
from operations.sagas.http import owner_of
from operations.sagas.intake import SagaIntake
from operations.settings import DEFAULT_MESSAGES_FILE
from tests.sagas_support import Harness
from tests.support import ServeProcess, eventually

PACCO = Catalogue.load(DEFAULT_MESSAGES_FILE)
LIMIT = 262_144
Token = Callable[..., str]


@dataclass
class HeardData:
    heard: int = 0


class HeardSaga(Saga[HeardData]):
    name = "heard"
    data_type = HeardData

    @start("start_delivery")
    async def begin(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.heard += 1


@dataclass(frozen=True)
class Delivery:
    """A delivered message (the ``Delivered`` protocol), as aio-pika hands it over."""

    correlation_id: str | None
    headers: Mapping[str, Any]
    exchange: str | None = "deliveries"
    routing_key: str | None = "start_delivery"
    body: bytes = b'{"deliveryId":"d-1","parcelId":"p-1"}'
    message_id: str | None = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: dt.datetime | None = None
    content_type: str | None = None


def contexts(user: uuid.UUID) -> dict[str, tuple[str, Any]]:
    """The ways a message_context arrives: (header name, value)."""
    dotnet = {"User": {"Id": user.hex.upper()}, "Name": "start_delivery", "TraceId": "t-net"}
    python = {"user": {"id": str(user)}, "name": "start_delivery", "traceId": "t-py"}
    return {
        "pascal-case bytes": ("message_context", bytearray(orjson.dumps(dotnet))),
        "camel-case text": ("Message_Context", orjson.dumps(python).decode()),
        "amqp table": ("message_context", {"User": {"Id": f"{{{user}}}"}, "TraceId": "t-tab"}),
        "not utf-8": ("message_context", b'{"user":{"id":"\xff\xfe"}}'),
    }


@pytest.mark.parametrize("way", ["pascal-case bytes", "camel-case text", "amqp table", "not utf-8"])
@pytest.mark.parametrize("spelling", ["N upper", "braced", "D"])
async def test_the_intake_reads_a_message_as_the_tracking_path_does(
    redis_client: aioredis.Redis, way: str, spelling: str
) -> None:
    user, operation = uuid.uuid4(), uuid.uuid4()
    correlation_id = {"N upper": operation.hex.upper(), "braced": f"{{{operation}}}"}.get(
        spelling, str(operation)
    )
    name, value = contexts(user)[way]
    delivery = Delivery(correlation_id, {name: value, "Saga": "Pending"})
    tracked = PACCO.read(delivery, LIMIT)
    assert tracked.operation_id == str(operation)

    harness = Harness.build(RedisSagaStore(redis_client, prefix="t"), [HeardSaga])
    (settled,) = await SagaIntake(harness.coordinator).process([delivery])
    assert isinstance(settled, Ack), settled

    loaded = await harness.store.load("heard", str(operation))
    assert loaded is not None, "the saga is keyed by the operation's id"
    record = loaded.record
    assert record.correlation_id == tracked.operation_id
    assert context_user_id(record.message_context) == tracked.user_id
    assert owner_of(record) == (tracked.user_id or "")
    assert context_trace_id(record.message_context) == tracked.trace_id
    if way == "not utf-8":
        assert (tracked.user_id, record.message_context) == (None, {})
        assert tracked.problems == ("headers.message_context: expected UTF-8 JSON text",)
    else:
        assert tracked.user_id == str(user)


async def test_a_saga_started_by_a_dotnet_service_closes_the_operation_its_user_sees(
    quiet_served: ServeProcess, amqp: AbstractRobustConnection, token: Token
) -> None:
    """A .NET service writes GUIDs in upper-case "N" form and the context in PascalCase bytes.
    Before, the saga kept the id as sent: its closing ended another operation than the one
    tracked, which stayed pending, and ``GET /operations/{id}/saga`` did not find it."""
    user, operation = uuid.uuid4(), uuid.uuid4()
    context = {"User": {"Id": user.hex.upper()}, "Name": "start_delivery"}
    async with amqp.channel(publisher_confirms=True) as channel:
        exchange = await channel.declare_exchange("deliveries", "topic", durable=True)
        await exchange.publish(
            aio_pika.Message(
                orjson.dumps({"deliveryId": "d-1", "plan": "complete"}),
                headers={"message_context": bytearray(orjson.dumps(context)), "Saga": "Pending"},
                correlation_id=operation.hex.upper(),
                message_id=uuid.uuid4().hex,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="start_delivery",
        )
    bearer = {"Authorization": f"Bearer {token(str(user))}"}
    async with httpx.AsyncClient(base_url=quiet_served.url, timeout=30) as http:

        async def closed() -> dict[str, Any] | None:
            response = await http.get(f"/operations/{operation}", headers=bearer)
            if response.status_code != 200 or response.json()["state"] == "pending":
                return None
            document: dict[str, Any] = response.json()
            return document

        record = await eventually(closed, "the operation to close", timeout=15)
        assert (record["state"], record["userId"]) == ("completed", str(user))
        saga = await http.get(f"/operations/{operation}/saga", headers=bearer)
        assert saga.status_code == 200, saga.text
        assert saga.json()["status"] == "completed"
