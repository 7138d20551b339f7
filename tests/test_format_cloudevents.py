"""The CloudEvents format: events built with the official SDK (cloudevents 2.2.0, its ``rabbitmq``
and ``amqp`` bindings, binary and structured), published with aio-pika through the real RabbitMQ,
read as the service reads them, and tracked end to end by a running service."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from cloudevents.core.v03.event import CloudEvent as CloudEventV03
from cloudevents.core.v1.event import CloudEvent

from operations.amqp.catalogue import Catalogue
from operations.amqp.queues import QueueType
from operations.envelope import Envelope
from operations.errors import CatalogueError, EnvelopeError
from operations.settings import Settings
from operations.states import MessageKind, State
from operations.wire import Binding, ExchangeKind
from tests.api import bearer
from tests.dead_letter_support import letters
from tests.fixtures.cloudevents import (
    JSON,
    MODES,
    amqp_binary,
    amqp_structured,
    rabbitmq_binary,
    rabbitmq_structured,
)
from tests.live import LiveClient
from tests.support import eventually, start_service

Token = Callable[..., str]
Deliver = Callable[[aio_pika.Message], Awaitable[AbstractIncomingMessage]]

EXCHANGE = "ce.orders"
CREATE = "com.example.orders.CreateOrder"
CREATED = "com.example.orders.OrderCreated"
REJECTED = "com.example.orders.CreateOrderRejected"
ENTRY: dict[str, Any] = {
    "format": "cloudevents",
    "exchange": EXCHANGE,
    "commands": [CREATE],
    "events": [CREATED],
    "rejectedEvents": [REJECTED],
}
CATALOGUE = Catalogue.from_document({"orders": ENTRY})
LIMIT = 64 * 1024
OP = "5f2b0d3c6a1e4b8f9c7d2e1a0b3c4d5e"
OP_ID = "5f2b0d3c-6a1e-4b8f-9c7d-2e1a0b3c4d5e"
SENT = dt.datetime(2026, 12, 7, 12, 30, 5, 250000, tzinfo=dt.UTC)


def event(type_: str = CREATE, data: Any = None, **attributes: Any) -> CloudEvent:
    """A CloudEvent as a producer builds it with the SDK (it fills in id and time)."""
    given = {"type": type_, "source": "/orders", "time": SENT, **attributes}
    return CloudEvent(given, data)


def without(message: aio_pika.Message, attribute: str) -> aio_pika.Message:
    """``message`` with one attribute taken out, from its headers or its structured body."""
    headers = {
        key: value
        for key, value in (message.headers or {}).items()
        if key.lower() not in {f"ce-{attribute}", f"cloudevents_{attribute}"}
    }
    body = message.body
    if message.content_type == JSON.CONTENT_TYPE:
        fields = orjson.loads(body)
        del fields[attribute]
        body = orjson.dumps(fields)
    return aio_pika.Message(body, headers=headers, content_type=message.content_type)


@pytest.fixture
async def deliver(amqp: AbstractRobustConnection) -> AsyncIterator[Deliver]:
    """Publishes a message to the entry's topic exchange with its type as routing key, and
    gives it back as delivered."""
    async with amqp.channel(publisher_confirms=True) as channel:
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")

        async def send(message: aio_pika.Message) -> AbstractIncomingMessage:
            await exchange.publish(message, routing_key="com.example.orders")
            return await eventually(lambda: queue.get(no_ack=True, fail=False), "the delivery")

        yield send


async def read(deliver: Deliver, message: aio_pika.Message, limit: int = LIMIT) -> Envelope:
    return CATALOGUE.read(await deliver(message), limit)


async def refused(deliver: Deliver, message: aio_pika.Message) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as raised:
        await read(deliver, message)
    return raised.value


# Reading each binding and mode


@pytest.mark.parametrize("mode", MODES)
async def test_every_binding_and_mode_reads_the_same_event(deliver: Deliver, mode: str) -> None:
    ce = event(CREATE, {"orderId": "o-1"}, authid="alice", correlationid=OP)
    envelope = await read(deliver, MODES[mode](ce))
    assert envelope == Envelope(
        message=CREATE,
        exchange=EXCHANGE,
        kind=MessageKind.COMMAND,
        state=State.PENDING,
        operation_id=OP_ID,
        message_id=ce.get_id(),
        user_id="alice",
        name="create_order",
        sent_at=SENT,  # the amqp binding writes it as milliseconds since the epoch
    )


@pytest.mark.parametrize("mode", MODES)
async def test_a_rejected_event_carries_the_reason_and_code_of_its_data(
    deliver: Deliver, mode: str
) -> None:
    ce = event(REJECTED, {"Reason": "no parcels", "code": "order_without_parcels"})
    envelope = await read(deliver, MODES[mode](ce, correlation_id=OP))
    assert (envelope.state, envelope.kind) == (State.REJECTED, MessageKind.REJECTED_EVENT)
    assert (envelope.code, envelope.reason) == ("order_without_parcels", "no parcels")
    assert envelope.problems == ()


async def test_binary_data_in_a_structured_event_is_read_from_data_base64(
    deliver: Deliver,
) -> None:
    data = orjson.dumps({"reason": "vehicle busy", "code": "busy"})
    ce = event(REJECTED, data, datacontenttype="application/json")
    message = rabbitmq_structured(ce, correlation_id=OP)
    assert b"data_base64" in message.body
    envelope = await read(deliver, message)
    assert (envelope.code, envelope.reason) == ("busy", "vehicle busy")


async def test_an_event_without_a_json_object_for_data_has_no_reason(deliver: Deliver) -> None:
    text = event(REJECTED, "out of stock", datacontenttype="text/plain")
    envelope = await read(deliver, rabbitmq_binary(text, correlation_id=OP))
    assert (envelope.state, envelope.code, envelope.reason, envelope.problems) == (
        State.REJECTED,
        None,
        None,
        (),
    )
    listed = event(REJECTED, b"[1, 2]", datacontenttype="application/json")
    envelope = await read(deliver, rabbitmq_binary(listed, correlation_id=OP))
    assert envelope.problems == ("data: expected a JSON object, got list",)


async def test_a_datacontenttype_header_stands_for_a_missing_content_type(
    deliver: Deliver,
) -> None:
    # As Spring AMQP writes it (io.cloudevents.spring.amqp.CloudEventsHeaders.CONTENT_TYPE,
    # cloudevents/sdk-java spring/src/main/java/io/cloudevents/spring/amqp/CloudEventsHeaders.java).
    message = amqp_binary(event(REJECTED, "out of stock", datacontenttype="text/plain"))
    assert message.content_type == "text/plain" and message.headers is not None
    message.content_type = None
    message.headers["cloudEvents_datacontenttype"] = "text/plain"
    envelope = await read(deliver, message)
    assert (envelope.state, envelope.reason, envelope.problems) == (State.REJECTED, None, ())


async def test_a_version_0_3_event_is_read(deliver: Deliver) -> None:
    ce = CloudEventV03({"type": CREATED, "source": "/orders", "time": SENT}, {"orderId": "o"})
    envelope = await read(deliver, rabbitmq_structured(ce, correlation_id=OP))
    assert (envelope.state, envelope.message_id, envelope.sent_at) == (
        State.COMPLETED,
        ce.get_id(),
        SENT,
    )


# Ids, user, time and Saga


async def test_the_correlation_id_property_wins_over_the_attribute(deliver: Deliver) -> None:
    other = uuid.uuid4().hex
    ce = event(correlationid=other)
    from_property = await read(deliver, rabbitmq_binary(ce, correlation_id=OP))
    from_attribute = await read(deliver, rabbitmq_binary(ce))
    assert from_property.operation_id == OP_ID
    assert from_attribute.operation_id == str(uuid.UUID(other))


async def test_an_event_without_either_correlation_id_has_no_operation(deliver: Deliver) -> None:
    envelope = await read(deliver, rabbitmq_structured(event()))
    assert envelope.operation_id is None and envelope.problems == ()


async def test_the_user_is_the_auth_context_authid(deliver: Deliver) -> None:
    ce = event(authid="Bob@Example.com", authtype="user")
    assert (await read(deliver, amqp_binary(ce, correlation_id=OP))).user_id == "Bob@Example.com"
    anonymous = await read(deliver, amqp_binary(event(), correlation_id=OP))
    assert anonymous.user_id is None


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2026-12-07T13:30:05.25+01:00", SENT),
        ("2026-12-07T12:30:05.250000123Z", SENT),
    ],
)
async def test_the_time_is_read_as_utc(deliver: Deliver, sent: str, expected: dt.datetime) -> None:
    message = rabbitmq_binary(event(), correlation_id=OP)
    assert message.headers is not None
    message.headers["ce-time"] = sent
    envelope = await read(deliver, message)
    assert envelope.sent_at == expected and envelope.sent_at.tzinfo is dt.UTC
    assert envelope.problems == ()


@pytest.mark.parametrize("sent", ["yesterday", "2026-12-07T12:30:05", "2026-12-07"])
async def test_a_time_that_is_not_rfc_3339_is_a_problem(deliver: Deliver, sent: str) -> None:
    message = rabbitmq_binary(event(), correlation_id=OP)
    assert message.headers is not None
    message.headers["ce-time"] = sent
    envelope = await read(deliver, message)
    assert envelope.sent_at is None and envelope.state is State.PENDING
    assert envelope.problems == (f"time: not an RFC 3339 time with an offset: {sent!r}",)


@pytest.mark.parametrize("mode", ["rabbitmq-binary", "rabbitmq-structured"])
async def test_the_saga_header_decides_the_state(deliver: Deliver, mode: str) -> None:
    message = MODES[mode](event(CREATED), correlation_id=OP)
    message.headers = {**(message.headers or {}), "Saga": "Rejected"}
    envelope = await read(deliver, message)
    assert (envelope.kind, envelope.state) == (MessageKind.EVENT, State.REJECTED)


async def test_a_binary_body_over_the_limit_is_a_problem_and_the_rest_is_read(
    deliver: Deliver,
) -> None:
    ce = event(REJECTED, {"reason": "x" * 100})
    envelope = await read(deliver, rabbitmq_binary(ce, correlation_id=OP), limit=50)
    assert envelope.state is State.REJECTED and envelope.reason is None
    assert (
        envelope.problems[0].startswith("body: ")
        and "exceeds the limit of 50" in (envelope.problems[0])
    )


# What is dead-lettered, and why


def convey_message() -> aio_pika.Message:
    # As Convey's RabbitMqClient.Send writes it (snatch-dev/Convey,
    # src/Convey.MessageBrokers.RabbitMQ/src/Convey.MessageBrokers.RabbitMQ/Clients/
    # RabbitMqClient.cs): JSON body, message_id and correlation_id as "N" GUIDs, a timestamp, and
    # the message_context header; no content type.
    return aio_pika.Message(
        b'{"orderId":"o-1"}',
        headers={"message_context": '{"user":{"id":"alice"},"name":"create_order"}'},
        message_id=uuid.uuid4().hex,
        correlation_id=OP,
        timestamp=SENT,
    )


def masstransit_message() -> aio_pika.Message:
    # A MassTransit envelope as MassTransit/MassTransit
    # src/MassTransit/Serialization/JsonMessageEnvelope.cs serialises it.
    message_id = str(uuid.uuid4())
    envelope = {
        "messageId": message_id,
        "conversationId": OP_ID,
        "sourceAddress": "rabbitmq://localhost/orders",
        "destinationAddress": "rabbitmq://localhost/Orders:OrderCreated",
        "messageType": ["urn:message:Orders:OrderCreated"],
        "message": {"orderId": "o-1"},
        "sentTime": "2026-12-07T12:30:05.25Z",
        "headers": {},
        "host": {"machineName": "m", "processName": "p", "massTransitVersion": "8.5.8.0"},
    }
    return aio_pika.Message(
        orjson.dumps(envelope),
        content_type="application/vnd.masstransit+json",
        message_id=message_id,
    )


def batch_message() -> aio_pika.Message:
    one = orjson.loads(JSON.write(event(CREATED)))
    return aio_pika.Message(
        orjson.dumps([one]), content_type="application/cloudevents-batch+json; charset=utf-8"
    )


BAD: dict[str, tuple[Callable[[], aio_pika.Message], str]] = {
    "no specversion (plain JSON)": (
        lambda: aio_pika.Message(b'{"a": 1}', content_type="application/json"),
        "specversion: not a CloudEvent: a message with no specversion (no ce-, cloudEvents_ or"
        " cloudEvents: header, and content type application/json, not"
        " application/cloudevents+json)",
    ),
    "structured without specversion": (
        lambda: without(rabbitmq_structured(event()), "specversion"),
        "specversion: a structured CloudEvent (application/cloudevents+json) without specversion",
    ),
    "binary without id": (
        lambda: without(rabbitmq_binary(event()), "id"),
        "id: the CloudEvent has no 'id', which every CloudEvent has",
    ),
    "structured without type": (
        lambda: without(amqp_structured(event()), "type"),
        "type: the CloudEvent has no 'type', which every CloudEvent has",
    ),
    "binary without source": (
        lambda: without(amqp_binary(event()), "source"),
        "source: the CloudEvent has no 'source', which every CloudEvent has",
    ),
    "unknown type": (
        lambda: rabbitmq_binary(event("com.example.orders.OrderShipped")),
        "type: 'com.example.orders.OrderShipped' on exchange 'ce.orders' is not in the catalogue",
    ),
    "batch mode": (
        batch_message,
        "content_type: a batch of CloudEvents (application/cloudevents-batch+json), which is not"
        " read: publish each event as a message of its own",
    ),
    "structured, not JSON format": (
        lambda: aio_pika.Message(b"\x00", content_type="application/cloudevents+avro"),
        "content_type: a structured CloudEvent as 'application/cloudevents+avro', which is not"
        " read: only application/cloudevents+json",
    ),
    "structured, not JSON": (
        lambda: aio_pika.Message(b"specversion=1.0", content_type=JSON.CONTENT_TYPE),
        "body: not valid JSON, so not a structured CloudEvent (application/cloudevents+json)",
    ),
    "structured, not an object": (
        lambda: aio_pika.Message(b'["1.0"]', content_type=JSON.CONTENT_TYPE),
        "body: expected a JSON object, got list, so not a structured CloudEvent"
        " (application/cloudevents+json)",
    ),
    "another version": (
        lambda: aio_pika.Message(
            JSON.write(event()).replace(b'"1.0"', b'"2.0"'), content_type=JSON.CONTENT_TYPE
        ),
        "specversion: '2.0' is not a CloudEvents version read here (1.0, 0.3)",
    ),
    "a Convey message": (
        convey_message,
        "specversion: not a CloudEvent: a Convey message with no specversion (no ce-,"
        " cloudEvents_ or cloudEvents: header, and content type none, not"
        " application/cloudevents+json)",
    ),
    "a MassTransit message": (
        masstransit_message,
        "specversion: not a CloudEvent: a MassTransit message with no specversion (no ce-,"
        " cloudEvents_ or cloudEvents: header, and content type"
        " application/vnd.masstransit+json, not application/cloudevents+json)",
    ),
}


@pytest.mark.parametrize("case", BAD)
async def test_what_cannot_be_read_as_a_cloudevent_is_refused_with_a_reason(
    deliver: Deliver, case: str
) -> None:
    build, reason = BAD[case]
    assert (await refused(deliver, build())).reason == reason


async def test_a_structured_event_over_the_limit_is_refused(deliver: Deliver) -> None:
    message = rabbitmq_structured(event(CREATED, {"big": "x" * 200}))
    with pytest.raises(EnvelopeError, match="exceeds the limit of 100"):
        await read(deliver, message, limit=100)


# The catalogue entry


def test_bindings_default_to_every_type_on_the_topic_exchange() -> None:
    assert CATALOGUE.bindings == [
        Binding(EXCHANGE, ExchangeKind.TOPIC, CREATE),
        Binding(EXCHANGE, ExchangeKind.TOPIC, CREATED),
        Binding(EXCHANGE, ExchangeKind.TOPIC, REJECTED),
    ]


def test_bindings_follow_the_routing_keys_given() -> None:
    given = Catalogue.from_document(
        {"orders": {**ENTRY, "routingKeys": ["com.example.orders.#", "audit"]}}
    )
    assert given.bindings == [
        Binding(EXCHANGE, ExchangeKind.TOPIC, "com.example.orders.#"),
        Binding(EXCHANGE, ExchangeKind.TOPIC, "audit"),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exchange": None}, "needs a string 'exchange'"),
        ({"exchange": "bad exchange"}, "invalid exchange name 'bad exchange'"),
        ({"exchange": "x" * 256}, "invalid exchange name"),
        ({"events": [""]}, "invalid event type ''"),
        ({"events": ["a\nb"]}, "invalid event type 'a\\nb'"),
        ({"events": ["é" * 128]}, "at most 255 bytes"),
        ({"routingKeys": ["a\tb"]}, "invalid routing key 'a\\tb'"),
        ({"routingKeys": ["x" * 256]}, "'routingKeys' must be a list of routing keys"),
        ({"routingKeys": []}, "has an empty 'routingKeys'"),
        ({"operationId": "correlationId"}, "'operationId' does not apply to the cloudevents"),
        ({"userHeader": "UserId"}, "'userHeader' does not apply to the cloudevents"),
    ],
)
def test_an_entry_with_bad_names_or_options_is_refused(
    change: dict[str, Any], message: str
) -> None:
    entry = {key: value for key, value in {**ENTRY, **change}.items() if value is not None}
    with pytest.raises(CatalogueError, match=re.escape(message)) as raised:
        Catalogue.from_document({"orders": entry})
    assert "service 'orders'" in raised.value.reason


def test_types_may_be_any_printable_names_and_exchanges_wider_than_conveys() -> None:
    catalogue = Catalogue.from_document(
        {
            "orders": {
                "format": "cloudevents",
                "exchange": "Orders:Events",
                "events": ["order created", "urn:example:OrderCreated/v1"],
            }
        }
    )
    assert [binding.routing_key for binding in catalogue.bindings] == [
        "order created",
        "urn:example:OrderCreated/v1",
    ]


# End to end, through a running service


def catalogue_file(path: Path) -> Path:
    path.write_text(orjson.dumps({"orders": ENTRY}).decode())
    return path


async def publish(
    channel: aio_pika.abc.AbstractChannel, message: aio_pika.Message, routing_key: str
) -> None:
    exchange = await channel.get_exchange(EXCHANGE)
    message.delivery_mode = aio_pika.DeliveryMode.PERSISTENT
    await exchange.publish(message, routing_key=routing_key)


@pytest.mark.parametrize("queue_type", list(QueueType))
async def test_a_command_then_its_event_complete_the_operation_seen_over_http_and_socket_io(
    queue_type: QueueType,
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    token: Token,
    tmp_path: Path,
) -> None:
    user, op = f"user-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    tracked = replace(
        settings,
        sagas=False,
        queue_type=queue_type,
        messages_file=catalogue_file(tmp_path / "ce.json"),
    )
    async with (
        start_service(tracked) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
        amqp.channel(publisher_confirms=True) as channel,
    ):
        live = LiveClient(running.url)
        try:
            await live.connect(auth={"token": token(user)})
            command = event(CREATE, {"orderId": "o-1"}, authid=user)
            await publish(channel, rabbitmq_binary(command, correlation_id=op), CREATE)
            pushed = await live.wait_for_state(op, "pending")
            assert (pushed["userId"], pushed["name"], pushed["version"]) == (
                user,
                "create_order",
                1,
            )

            # The same event again (its id unchanged) is a duplicate and changes nothing.
            await publish(channel, rabbitmq_binary(command, correlation_id=op), CREATE)
            metrics = running.service.metrics.messages

            async def judged() -> bool:
                return metrics.value(kind="command", outcome="duplicate") == 1

            await eventually(judged, "the duplicate to be judged")

            done = event(CREATED, {"orderId": "o-1"}, authid=user, correlationid=op)
            await publish(channel, amqp_structured(done), CREATED)
            completed = await live.wait_for_state(op, "completed")
            assert (completed["name"], completed["version"]) == ("order_created", 2)

            response = await http.get(f"/operations/{op}", headers=bearer(token(user)))
            assert response.status_code == 200
            record = orjson.loads(response.content)
            assert (record["state"], record["userId"], record["version"]) == (
                "completed",
                user,
                2,
            )
            history = await http.get(f"/operations/{op}/history", headers=bearer(token(user)))
            items = orjson.loads(history.content)["items"]
            assert [(i["message"], i["messageId"], i["state"]) for i in items] == [
                (CREATE, command.get_id(), "pending"),
                (CREATED, done.get_id(), "completed"),
            ]
            assert items[0]["sentAt"] == "2026-12-07T12:30:05.250Z"
            assert [r["version"] for r in live.records(op)] == [1, 2]
        finally:
            await live.close()


async def test_a_rejected_event_rejects_the_operation_with_its_reason_and_code(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    token: Token,
    tmp_path: Path,
) -> None:
    user, op = f"user-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    tracked = replace(settings, sagas=False, messages_file=catalogue_file(tmp_path / "ce.json"))
    async with (
        start_service(tracked) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
        amqp.channel(publisher_confirms=True) as channel,
    ):
        live = LiveClient(running.url)
        try:
            await live.connect(auth={"token": token(user)})
            command = event(CREATE, {"orderId": "o-2"}, authid=user)
            await publish(channel, amqp_binary(command, "cloudEvents:", correlation_id=op), CREATE)
            await live.wait_for_state(op, "pending")
            data = {"reason": "the customer is locked", "code": "customer_locked"}
            rejected = event(REJECTED, data, authid=user)
            await publish(channel, rabbitmq_structured(rejected, correlation_id=op), REJECTED)
            pushed = await live.wait_for_state(op, "rejected")
            assert (pushed["code"], pushed["reason"]) == ("customer_locked", data["reason"])

            response = await http.get(f"/operations/{op}", headers=bearer(token(user)))
            record = orjson.loads(response.content)
            assert (record["state"], record["code"], record["reason"], record["name"]) == (
                "rejected",
                "customer_locked",
                "the customer is locked",
                "create_order_rejected",
            )
        finally:
            await live.close()


async def test_bad_input_lands_in_the_workbench_with_its_reason(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    token: Token,
    tmp_path: Path,
) -> None:
    kept = replace(
        settings,
        dead_letter_keep=True,
        sagas=False,
        messages_file=catalogue_file(tmp_path / "ce.json"),
    )
    admin = bearer(token("ops", "admin"))
    op = uuid.uuid4().hex
    sent = {
        CREATE: without(rabbitmq_structured(event(CREATE)), "specversion"),
        CREATED: convey_message(),
        REJECTED: rabbitmq_binary(event("com.example.orders.Unknown"), correlation_id=op),
    }
    async with (
        start_service(kept) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
        amqp.channel(publisher_confirms=True) as channel,
    ):
        for routing_key, message in sent.items():
            await publish(channel, message, routing_key)

        async def all_kept() -> list[dict[str, Any]]:
            # By id: a page read while letters are still being kept may show one twice.
            found = {letter["id"]: letter for letter in await letters(http, admin)}
            return list(found.values()) if len(found) == len(sent) else []

        found = await eventually(all_kept, "the dead letters to be kept")
        reasons = {letter["routingKey"]: letter["reason"] for letter in found}
        assert reasons == {
            CREATE: BAD["structured without specversion"][1],
            CREATED: BAD["a Convey message"][1],
            REJECTED: "type: 'com.example.orders.Unknown' on exchange 'ce.orders' is not in"
            " the catalogue",
        }
        assert {letter["exchange"] for letter in found} == {EXCHANGE}
        assert {letter["disposition"] for letter in found} == {"not-applied"}
        missing = await http.get(f"/operations/{op}", headers=admin)
        assert missing.status_code == 404
