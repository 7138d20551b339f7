"""MassTransit's wire format: messages built byte for byte as MassTransit 8 publishes them
(tests/fixtures/masstransit) read into operations, bad ones refused with a reason, catalogue
entries checked and bound; then the same messages through a running service, seen over HTTP and
by a Socket.IO client of their owner, and bad ones kept in the dead-letter workbench."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.catalogue import Catalogue
from operations.amqp.queues import QueueType
from operations.envelope import Envelope
from operations.errors import CatalogueError, EnvelopeError
from operations.settings import Settings
from operations.states import MessageKind, State
from operations.wire import Binding, ExchangeKind
from tests.api import bearer
from tests.dead_letter_support import letters
from tests.fixtures.masstransit import (
    Sent,
    dotnet_time,
    exchange,
    fault,
    fault_exchange,
    guid,
    published,
    raw,
    urn,
)
from tests.hub_support import live_clients
from tests.support import RunningService, eventually, start_service

Token = Callable[..., str]
LIMIT = 262_144
SUBMIT = "Shop.Orders.SubmitOrder"
SUBMITTED = "Shop.Orders.OrderSubmitted"
REJECTED = "Shop.Orders.OrderRejected"
NESTED = "Shop.Orders.Checkout+PayOrder"
ENTRY: dict[str, Any] = {
    "format": "masstransit",
    "commands": [SUBMIT, NESTED],
    "events": [SUBMITTED],
    "rejectedEvents": [REJECTED],
}
CATALOGUE = Catalogue.from_document({"orders": ENTRY})
USER = "0f8fad5b-d9cb-469f-a165-70867728950e"


def read(sent: Sent, catalogue: Catalogue = CATALOGUE, max_bytes: int = LIMIT) -> Envelope:
    return catalogue.read(sent.received(), max_bytes)


def refused(sent: Sent, catalogue: Catalogue = CATALOGUE, max_bytes: int = LIMIT) -> str:
    with pytest.raises(EnvelopeError) as caught:
        read(sent, catalogue, max_bytes)
    return caught.value.reason


def with_entry(**options: Any) -> Catalogue:
    return Catalogue.from_document({"orders": {**ENTRY, **options}})


def order(**fields: Any) -> dict[str, Any]:
    return {"orderId": guid(), "customerId": guid(), **fields}


# --- reading ---------------------------------------------------------------------------------


def test_a_published_command_is_pending_with_its_ids_owner_and_time() -> None:
    op, message_id = guid(), guid()
    sent = published(
        SUBMIT,
        order(),
        conversation_id=op.upper(),
        message_id=message_id,
        headers={"UserId": USER.replace("-", ""), "MT-Activity-Id": "00-4bf9-01"},
        sent_time="2026-12-07T18:59:59.1234567Z",
    )
    envelope = read(sent)
    assert envelope == Envelope(
        message=SUBMIT,
        exchange="Shop.Orders:SubmitOrder",
        kind=MessageKind.COMMAND,
        state=State.PENDING,
        operation_id=op,
        message_id=message_id,
        user_id=USER,
        name="submit_order",
        sent_at=dt.datetime(2026, 12, 7, 18, 59, 59, 123456, tzinfo=dt.UTC),
    )


def test_events_complete_and_rejected_events_carry_the_messages_code_and_reason() -> None:
    op = guid()
    done = read(published(SUBMITTED, order(), conversation_id=op))
    assert (done.kind, done.state, done.name, done.code) == (
        MessageKind.EVENT,
        State.COMPLETED,
        "order_submitted",
        None,
    )
    no = read(
        published(
            REJECTED, order(Code="out_of_stock", reason="No parcels left"), conversation_id=op
        )
    )
    assert (no.kind, no.state, no.code, no.reason) == (
        MessageKind.REJECTED_EVENT,
        State.REJECTED,
        "out_of_stock",
        "No parcels left",
    )
    assert no.problems == ()


def test_a_fault_of_a_listed_command_rejects_with_its_first_exception() -> None:
    op = guid()
    command = published(
        SUBMIT, order(), conversation_id=op, headers={"UserId": USER, "Saga": "pending"}
    )
    sent = fault(command, SUBMIT, "System.InvalidOperationException", "The order is closed")
    assert sent.exchange == "MassTransit:Fault--Shop.Orders:SubmitOrder--"
    envelope = read(sent)
    fault_id = json.loads(sent.body)["messageId"]
    assert envelope == Envelope(
        message="MassTransit.Fault[Shop.Orders.SubmitOrder]",
        exchange="MassTransit:Fault--Shop.Orders:SubmitOrder--",
        kind=MessageKind.REJECTED_EVENT,
        # The command's Saga header rides on its fault (TransferConsumeContextHeaders): the fault
        # still rejects.
        state=State.REJECTED,
        operation_id=op,
        message_id=f"fault:{fault_id}",
        user_id=USER,
        name="submit_order_fault",
        code="InvalidOperationException",
        reason="The order is closed",
        sent_at=envelope.sent_at,
    )
    assert envelope.sent_at is not None


def test_a_fault_never_shares_the_id_of_the_message_it_is_about() -> None:
    command = published(SUBMIT, order(), conversation_id=guid())
    copy_id = json.loads(command.body)["messageId"]
    about = read(fault(command, SUBMIT, "Shop.Errors.Closed", "closed", message_id=copy_id))
    assert read(command).message_id == copy_id
    assert about.message_id == f"fault:{copy_id}"


@pytest.mark.parametrize(
    ("exception_type", "code"),
    [
        ("System.ArgumentException", "ArgumentException"),
        ("Shop.Orders.Checkout+PaymentDeclined", "PaymentDeclined"),
        ("Shop.Errors.Rejected<Shop.Orders.SubmitOrder>", "Rejected"),
        ("Timeout", "Timeout"),
    ],
)
def test_a_faults_code_is_the_short_name_of_its_exception_type(
    exception_type: str, code: str
) -> None:
    command = published(SUBMIT, order(), conversation_id=guid())
    assert read(fault(command, SUBMIT, exception_type, "failed")).code == code


def test_a_fault_without_exceptions_still_rejects_in_part() -> None:
    command = published(SUBMIT, order(), conversation_id=guid())
    sent = fault(command, SUBMIT, "System.Exception", "x")
    document = json.loads(sent.body)
    document["message"]["exceptions"] = []
    envelope = read(replace(sent, body=json.dumps(document).encode()))
    assert (envelope.state, envelope.code, envelope.reason) == (State.REJECTED, None, None)
    assert envelope.problems == ("message.exceptions: expected a list of exceptions",)


def test_raw_json_reads_the_ids_types_and_owner_from_headers() -> None:
    op, message_id = guid(), guid()
    sent = raw(
        SUBMITTED, order(), conversation_id=op, message_id=message_id, headers={"UserId": USER}
    )
    assert sent.headers["MT-MessageType"] == "urn:message:Shop.Orders:OrderSubmitted"
    envelope = read(sent)
    assert (envelope.message, envelope.state, envelope.operation_id) == (
        SUBMITTED,
        State.COMPLETED,
        op,
    )
    assert (envelope.message_id, envelope.user_id, envelope.problems) == (message_id, USER, ())


def test_raw_json_takes_the_first_listed_of_its_types_and_reads_a_saga_header() -> None:
    sent = raw(SUBMIT, order(), conversation_id=guid(), headers={"Saga": "completed"})
    headers = {
        **sent.headers,
        "MT-MessageType": f"urn:message:Shop:ICommand;{urn(SUBMIT)};urn:message:Shop:IAudited",
    }
    envelope = read(replace(sent, headers=headers))
    assert (envelope.message, envelope.kind, envelope.state) == (
        SUBMIT,
        MessageKind.COMMAND,
        State.COMPLETED,
    )


def test_raw_json_rejected_events_carry_the_bodys_code_and_reason() -> None:
    sent = raw(REJECTED, order(code="no_stock", Reason=7), conversation_id=guid())
    envelope = read(sent)
    assert (envelope.state, envelope.code, envelope.reason) == (State.REJECTED, "no_stock", None)
    assert envelope.problems == ("body.reason: expected a string, got int",)


def test_raw_json_over_the_limit_is_read_from_its_headers_in_part() -> None:
    sent = raw(REJECTED, order(reason="x" * 500), conversation_id=guid())
    envelope = read(sent, max_bytes=200)
    assert (envelope.state, envelope.reason) == (State.REJECTED, None)
    assert envelope.problems == (
        f"body: {len(sent.body)} bytes exceeds the limit of 200, not read",
    )


def test_a_raw_fault_rejects_too() -> None:
    command = published(SUBMIT, order(), conversation_id=guid())
    body = json.loads(fault(command, SUBMIT, "System.TimeoutException", "too slow").body)
    sent = raw(SUBMIT, body["message"], conversation_id=body["conversationId"])
    headers = {
        **sent.headers,
        "MT-MessageType": "urn:message:MassTransit:Fault[[Shop.Orders:SubmitOrder]]",
    }
    envelope = read(replace(sent, exchange=fault_exchange(SUBMIT), headers=headers))
    assert (envelope.state, envelope.code, envelope.reason) == (
        State.REJECTED,
        "TimeoutException",
        "too slow",
    )


def test_the_saga_header_of_the_envelope_wins_in_any_letter_case() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid(), headers={"saga": "Rejected"})
    envelope = read(sent)
    assert (envelope.kind, envelope.state) == (MessageKind.COMMAND, State.REJECTED)


def test_the_owner_comes_from_the_envelope_header_the_entry_names_in_any_letter_case() -> None:
    sent = published(
        SUBMIT, order(), conversation_id=guid(), headers={"x-tenant-user": USER, "UserId": "no"}
    )
    assert read(sent, with_entry(userHeader="X-Tenant-User")).user_id == USER
    assert read(sent).user_id == "no"
    only_amqp = replace(sent, headers={"UserId": USER})  # not the envelope's: not read
    assert read(only_amqp).user_id == "no"


def test_an_owner_that_is_not_text_or_too_long_is_a_problem() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid(), headers={"UserId": 42})
    envelope = read(sent)
    assert envelope.user_id is None
    assert envelope.problems == ("headers.UserId: expected a string, got int",)
    long = read(published(SUBMIT, order(), conversation_id=guid(), headers={"UserId": "u" * 201}))
    assert long.user_id is None and long.problems[0].startswith("headers.UserId: not printable")


def test_the_entry_may_take_the_operation_id_from_correlation_id() -> None:
    conversation, correlation = guid(), guid()
    sent = published(SUBMIT, order(), conversation_id=conversation, correlation_id=correlation)
    assert read(sent).operation_id == conversation
    assert read(sent, with_entry(operationId="correlationId")).operation_id == correlation
    assert read(sent, with_entry(operationId="conversationId")).operation_id == conversation
    lone = published(SUBMIT, order(), conversation_id=conversation)
    assert read(lone, with_entry(operationId="correlationId")).operation_id is None
    raw_one = raw(SUBMIT, order(), conversation_id=conversation, correlation_id=correlation)
    assert read(raw_one, with_entry(operationId="correlationId")).operation_id == correlation


def test_a_message_without_an_operation_id_is_read_and_left_to_be_ignored() -> None:
    assert read(published(SUBMIT, order(), conversation_id=None)).operation_id is None


@pytest.mark.parametrize(
    ("sent_time", "expected"),
    [
        ("2026-12-07T18:59:59.1234567Z", dt.datetime(2026, 12, 7, 18, 59, 59, 123456)),
        ("2026-12-07T18:59:59.9999999Z", dt.datetime(2026, 12, 7, 18, 59, 59, 999999)),
        ("2026-12-07T18:59:59.12Z", dt.datetime(2026, 12, 7, 18, 59, 59, 120000)),
        ("2026-12-07T18:59:59Z", dt.datetime(2026, 12, 7, 18, 59, 59)),
        ("2026-12-07T20:59:59.5+02:00", dt.datetime(2026, 12, 7, 18, 59, 59, 500000)),
        ("2026-12-07T18:59:59.1234567", dt.datetime(2026, 12, 7, 18, 59, 59, 123456)),
    ],
)
def test_sent_time_is_read_to_the_microsecond_in_utc(sent_time: str, expected: dt.datetime) -> None:
    sent = published(SUBMIT, order(), conversation_id=guid(), sent_time=sent_time)
    assert read(sent).sent_at == expected.replace(tzinfo=dt.UTC)


def test_a_sent_time_that_is_not_a_time_is_a_problem() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid(), sent_time="2026-13-07T00:00:00Z")
    envelope = read(sent)
    assert (envelope.sent_at, envelope.problems) == (None, ("sentTime: not an ISO 8601 time",))


def test_dotnet_time_writes_ticks_as_system_text_json_does() -> None:
    moment = dt.datetime(2026, 12, 7, 18, 59, 59, 123450, tzinfo=dt.UTC)
    assert dotnet_time(moment) == "2026-12-07T18:59:59.12345Z"
    assert dotnet_time(moment.replace(microsecond=0)) == "2026-12-07T18:59:59Z"


def test_the_first_listed_urn_decides_the_type() -> None:
    types = ["urn:message:Shop:IOrderMessage", urn(SUBMITTED), urn(SUBMIT)]
    sent = published(SUBMIT, order(), conversation_id=guid(), message_types=types)
    assert read(sent).message == SUBMITTED


def test_a_nested_type_has_its_urn_and_exchange() -> None:
    sent = published(NESTED, order(), conversation_id=guid())
    assert json.loads(sent.body)["messageType"] == ["urn:message:Shop.Orders:Checkout+PayOrder"]
    envelope = read(sent)
    assert (envelope.message, envelope.name, envelope.exchange) == (
        NESTED,
        "pay_order",
        "Shop.Orders:Checkout-PayOrder",
    )


def test_a_message_on_a_parameterised_content_type_is_read() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid())
    assert read(replace(sent, content_type=f"{sent.content_type}; charset=utf-8")).message == SUBMIT


# --- what is dead-lettered, and why ----------------------------------------------------------


def test_an_envelope_that_is_not_json_or_not_an_object_is_refused() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid())
    assert refused(replace(sent, body=b"{not json")) == (
        "body: not a MassTransit envelope (body: not valid JSON)"
    )
    assert refused(replace(sent, body=b"[1, 2]")) == (
        "body: not a MassTransit envelope (body: expected a JSON object, got list)"
    )


def test_an_envelope_without_a_message_id_is_refused() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid(), message_id="")
    assert refused(sent) == "messageId: missing, and MassTransit sets it on every message"
    no_header = raw(SUBMIT, order(), conversation_id=guid())
    headers = {k: v for k, v in no_header.headers.items() if k != "MessageId"}
    assert refused(replace(no_header, headers=headers, message_id=None)) == (
        "messageId: missing, and MassTransit sets it on every message"
    )


def test_an_envelope_without_types_or_of_unlisted_types_is_refused_naming_them() -> None:
    sent = published(
        SUBMIT,
        order(),
        conversation_id=guid(),
        message_types=["urn:message:Shop.Orders:CancelOrder", "urn:message:Shop:ICommand"],
    )
    assert refused(sent) == (
        "messageType: none of its types is in the catalogue for service 'orders'"
        " (masstransit): 'urn:message:Shop.Orders:CancelOrder', 'urn:message:Shop:ICommand'"
    )
    assert refused(published(SUBMIT, order(), conversation_id=guid(), message_types=[])) == (
        "messageType: missing: expected a list of message type URNs"
    )
    unlisted_fault = fault(sent, "Shop.Orders.CancelOrder", "System.Exception", "x")
    on_listed = replace(unlisted_fault, exchange=fault_exchange(SUBMIT))
    assert "'urn:message:MassTransit:Fault[[Shop.Orders:CancelOrder]]'" in refused(on_listed)


def test_an_oversized_envelope_is_refused_as_its_ids_are_inside() -> None:
    sent = published(SUBMIT, order(note="x" * 400), conversation_id=guid())
    assert refused(sent, max_bytes=300) == (
        f"body: {len(sent.body)} bytes exceeds the limit of 300; the envelope holds the"
        " message's ids, so nothing of it is read"
    )


def test_a_serialization_other_than_json_is_refused() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid())
    bson = replace(sent, content_type="application/vnd.masstransit+bson", body=b"\x05\x00")
    assert refused(bson) == (
        "content_type: a MassTransit message of content type"
        " 'application/vnd.masstransit+bson' on 'Shop.Orders:SubmitOrder': only JSON (the"
        " envelope or raw JSON) is read"
    )
    raw_xml = raw(SUBMIT, order(), conversation_id=guid())
    assert "'application/xml'" in refused(replace(raw_xml, content_type="application/xml"))


@pytest.mark.parametrize(
    ("content_type", "headers", "what"),
    [
        (
            "application/json",
            {"message_context": '{"user":{"id":"u"}}'},
            "a Convey message",
        ),
        (
            "application/json",
            {"NServiceBus.MessageId": guid(), "NServiceBus.EnclosedMessageTypes": SUBMIT},
            "an NServiceBus message",
        ),
        ("application/json", {"ce-specversion": "1.0", "ce-id": "1"}, "a CloudEvent"),
        ("application/cloudevents+json", {}, "a CloudEvent"),
        ("text/plain", {}, "a message of content type 'text/plain'"),
    ],
)
def test_another_formats_message_on_a_masstransit_exchange_is_refused(
    content_type: str, headers: dict[str, Any], what: str
) -> None:
    sent = Sent(
        exchange=exchange(SUBMIT),
        body=orjson.dumps(order()),
        content_type=content_type,
        message_id=guid(),
        correlation_id=guid(),
        headers=headers,
    )
    assert refused(sent) == (
        f"format: {what} on 'Shop.Orders:SubmitOrder', which the catalogue lists as"
        " MassTransit's, is not a MassTransit message (no content type"
        " 'application/vnd.masstransit+json' and no MT-MessageType header)"
    )


def test_ids_that_are_not_text_are_refused() -> None:
    sent = published(SUBMIT, order(), conversation_id=guid())
    document = json.loads(sent.body)
    assert refused(replace(sent, body=orjson.dumps({**document, "messageId": 7}))) == (
        "messageId: expected a string, got int"
    )
    assert refused(replace(sent, body=orjson.dumps({**document, "conversationId": ["x"]}))) == (
        "conversationId: expected a string, got list"
    )


# --- the catalogue ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"commands": ["SubmitOrder"]},
            " invalid .NET type name 'SubmitOrder': expected Namespace.TypeName",
        ),
        (
            {"events": ["Shop.Orders.Order-Submitted"]},
            " invalid .NET type name 'Shop.Orders.Order-Submitted': expected Namespace.TypeName",
        ),
        (
            {"operationId": "messageId"},
            " has an invalid 'operationId' 'messageId': 'conversationId' (the default) or"
            " 'correlationId'",
        ),
        ({"userHeader": " "}, " has an invalid 'userHeader' ' ': a header name"),
        ({"exchange": "orders"}, ": 'exchange' does not apply to the masstransit format"),
        ({"routingKeys": ["a"]}, ": 'routingKeys' does not apply to the masstransit format"),
        ({"userHeader": 3}, " needs a string 'userHeader'"),
    ],
)
def test_an_entry_with_bad_names_or_options_is_refused(
    options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(CatalogueError) as caught:
        with_entry(**options)
    assert str(caught.value) == f"catalogue: service 'orders'{problem}"


def test_the_queue_binds_each_types_fanout_exchange_and_each_commands_fault_exchange() -> None:
    fanout = ExchangeKind.FANOUT
    assert CATALOGUE.bindings == [
        Binding("Shop.Orders:SubmitOrder", fanout),
        Binding("Shop.Orders:Checkout-PayOrder", fanout),
        Binding("Shop.Orders:OrderSubmitted", fanout),
        Binding("Shop.Orders:OrderRejected", fanout),
        Binding("MassTransit:Fault--Shop.Orders:SubmitOrder--", fanout),
        Binding("MassTransit:Fault--Shop.Orders:Checkout-PayOrder--", fanout),
    ]
    assert fault_exchange(NESTED) == "MassTransit:Fault--Shop.Orders:Checkout-PayOrder--"


# --- through a running service ---------------------------------------------------------------


def catalogue_file(path: Path, namespace: str = "Shop.Orders") -> Path:
    path.write_text(
        json.dumps(
            {
                "orders": {
                    "format": "masstransit",
                    "commands": [f"{namespace}.SubmitOrder"],
                    "events": [f"{namespace}.OrderSubmitted"],
                    "rejectedEvents": [f"{namespace}.OrderRejected"],
                }
            }
        )
    )
    return path


@pytest.fixture(params=[QueueType.CLASSIC, QueueType.QUORUM])
async def running(
    request: pytest.FixtureRequest,
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> AsyncIterator[RunningService]:
    """The service reading MassTransit's messages, on a classic or a quorum queue."""
    tracked = replace(
        settings,
        queue_type=request.param,
        sagas=False,
        dead_letter_keep=True,
        max_message_bytes=4096,
        messages_file=catalogue_file(tmp_path / "masstransit.json"),
    )
    async with start_service(tracked) as service:
        yield service


async def publish(amqp: AbstractRobustConnection, *messages: Sent) -> None:
    """Each to its exchange as MassTransit publishes it: routing key empty, broker confirmed."""
    async with amqp.channel(publisher_confirms=True) as channel:
        for sent in messages:
            target = await channel.get_exchange(sent.exchange, ensure=True)
            await target.publish(sent.message(), routing_key="")


async def record(http: httpx.AsyncClient, op: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.get(f"/operations/{op}", headers=headers)
    return orjson.loads(response.content) if response.status_code == 200 else {}


async def in_state(
    http: httpx.AsyncClient, op: str, headers: dict[str, str], state: str
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        found = await record(http, op, headers)
        return found if found.get("state") == state else None

    return await eventually(reached, f"{op} to be {state} over HTTP")


async def test_a_command_then_its_event_complete_the_operation_for_its_owner(
    running: RunningService, amqp: AbstractRobustConnection, token: Token
) -> None:
    op, user = guid(), guid()
    owner = bearer(token(user))
    command = published(
        SUBMIT,
        order(),
        conversation_id=op,
        headers={"UserId": user},
        sent_time="2026-12-07T18:59:59.1234567Z",
    )
    async with (
        live_clients(running.url) as clients,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        live = clients()
        await live.connect(auth={"token": token(user)})
        await publish(amqp, command)
        pending = await live.wait_for_state(op, "pending")
        assert (pending["userId"], pending["name"]) == (user, "submit_order")
        assert (await in_state(http, op, owner, "pending"))["version"] == 1

        await publish(amqp, published(SUBMITTED, order(), conversation_id=op))
        done = await live.wait_for_state(op, "completed")
        assert (done["userId"], done["name"], done["version"]) == (user, "order_submitted", 2)
        completed = await in_state(http, op, owner, "completed")

        # MassTransit's copy of the command (same messageId) arrives again: nothing changes.
        await publish(amqp, command)
        metrics = running.service.metrics.messages

        async def judged() -> bool:
            return metrics.value(kind="command", outcome="duplicate") == 1

        await eventually(judged, "the copy to be judged a duplicate")
        assert await record(http, op, owner) == completed
        history = orjson.loads((await http.get(f"/operations/{op}/history", headers=owner)).content)
        assert [(h["message"], h["state"]) for h in history["items"]] == [
            (SUBMIT, "pending"),
            (SUBMITTED, "completed"),
        ]
        assert history["items"][0]["messageId"] == json.loads(command.body)["messageId"]
        assert history["items"][0]["sentAt"] == "2026-12-07T18:59:59.123Z"
        assert [r["state"] for r in live.records(op)] == ["pending", "completed"]


async def test_a_fault_of_the_command_rejects_the_operation_with_reason_and_code(
    running: RunningService, amqp: AbstractRobustConnection, token: Token
) -> None:
    op, user = guid(), guid()
    owner = bearer(token(user))
    command = published(SUBMIT, order(), conversation_id=op, headers={"UserId": user})
    failed = fault(command, SUBMIT, "System.InvalidOperationException", "The order is closed")
    async with (
        live_clients(running.url) as clients,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        live = clients()
        await live.connect(auth={"token": token(user)})
        await publish(amqp, command)
        await live.wait_for_state(op, "pending")
        await publish(amqp, failed)
        pushed = await live.wait_for_state(op, "rejected")
        rejected = await in_state(http, op, owner, "rejected")
        for shown in (pushed, rejected):
            assert (shown["code"], shown["reason"], shown["name"]) == (
                "InvalidOperationException",
                "The order is closed",
                "submit_order_fault",
            )
        history = orjson.loads((await http.get(f"/operations/{op}/history", headers=owner)).content)
        assert history["items"][-1]["message"] == "MassTransit.Fault[Shop.Orders.SubmitOrder]"
        assert history["items"][-1]["messageId"] == f"fault:{json.loads(failed.body)['messageId']}"


async def test_bad_input_lands_in_the_workbench_with_its_reason(
    running: RunningService, amqp: AbstractRobustConnection, token: Token
) -> None:
    admin = bearer(token("ops", "admin"))
    good = published(SUBMIT, order(), conversation_id=guid())
    convey = Sent(
        exchange=exchange(SUBMITTED),
        body=b'{"orderId": "o-1"}',
        content_type="application/json",
        message_id=guid(),
        correlation_id=guid(),
        headers={"message_context": '{"user":{"id":"u-1"}}'},
    )
    bad = {
        "not-json": replace(good, body=b"<Envelope/>", message_id="not-json"),
        "no-id": replace(
            published(SUBMIT, order(), conversation_id=guid(), message_id=""),
            message_id="no-id",
        ),
        "unknown": replace(
            published(
                SUBMIT,
                order(),
                conversation_id=guid(),
                message_types=["urn:message:Shop.Orders:CancelOrder"],
            ),
            message_id="unknown",
        ),
        "convey": replace(convey, message_id="convey"),
        "oversized": replace(
            published(SUBMIT, order(note="x" * 5000), conversation_id=guid()),
            message_id="oversized",
        ),
    }
    await publish(amqp, *bad.values())
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:

        async def kept() -> dict[str, str] | None:
            # Keyed by message id: a listing taken while letters are still coming in may show
            # one of them twice.
            found = {item["messageId"]: item["reason"] for item in await letters(http, admin)}
            return found if found.keys() >= bad.keys() else None

        reasons = await eventually(kept, "the 5 letters")
    assert reasons == {
        "not-json": "body: not a MassTransit envelope (body: not valid JSON)",
        "no-id": "messageId: missing, and MassTransit sets it on every message",
        "unknown": "messageType: none of its types is in the catalogue for service 'orders'"
        " (masstransit): 'urn:message:Shop.Orders:CancelOrder'",
        "convey": "format: a Convey message on 'Shop.Orders:OrderSubmitted', which the catalogue"
        " lists as MassTransit's, is not a MassTransit message (no content type"
        " 'application/vnd.masstransit+json' and no MT-MessageType header)",
        "oversized": f"body: {len(bad['oversized'].body)} bytes exceeds the limit of 4096; the"
        " envelope holds the message's ids, so nothing of it is read",
    }


async def test_fanout_exchanges_that_already_exist_are_used_as_they_are(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    token: Token,
) -> None:
    namespace = f"Shop.T{uuid.uuid4().hex}"
    command, event = f"{namespace}.SubmitOrder", f"{namespace}.OrderSubmitted"
    async with amqp.channel() as channel:
        for name in (exchange(command), exchange(event), fault_exchange(command)):
            await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
    tracked = replace(
        settings, sagas=False, messages_file=catalogue_file(tmp_path / "mt.json", namespace)
    )
    op, user = guid(), guid()
    admin = bearer(token("ops", "admin"))
    async with (
        start_service(tracked) as service,
        httpx.AsyncClient(base_url=service.url, timeout=30) as http,
    ):
        await publish(amqp, published(command, order(), conversation_id=op))
        assert (await in_state(http, op, admin, "pending"))["userId"] is None
        # Another service of the system publishes with the raw JSON serializer.
        await publish(amqp, raw(event, order(), conversation_id=op, headers={"UserId": user}))
        completed = await in_state(http, op, admin, "completed")
        assert completed["userId"] == user
    async with amqp.channel() as channel:
        for name in (exchange(command), exchange(event), fault_exchange(command)):
            await channel.exchange_delete(name)


async def test_a_type_published_as_one_that_implements_a_listed_type_is_read_as_the_listed_one(
    running: RunningService, amqp: AbstractRobustConnection, token: Token
) -> None:
    """MassTransit publishes a class to its own exchange and binds that exchange to the ones of
    its interfaces and base types: the message arrives on an exchange no entry binds."""
    op, user = guid(), guid()
    owner = bearer(token(user))
    derived = "Shop.Orders.ExpressOrderSubmitted"
    async with amqp.channel() as channel:
        source = await channel.declare_exchange(
            exchange(derived), aio_pika.ExchangeType.FANOUT, durable=True
        )
        listed = await channel.get_exchange(exchange(SUBMITTED))
        await listed.bind(source)
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
            command = published(SUBMIT, order(), conversation_id=op, headers={"UserId": user})
            await publish(amqp, command)
            await in_state(http, op, owner, "pending")
            event = published(
                derived,
                order(),
                conversation_id=op,
                message_types=[urn(derived), urn(SUBMITTED)],
            )
            await publish(amqp, event)
            completed = await in_state(http, op, owner, "completed")
            assert completed["name"] == "order_submitted"
            history = (await http.get(f"/operations/{op}/history", headers=owner)).json()
            assert history["items"][-1]["message"] == SUBMITTED
    finally:
        async with amqp.channel() as channel:
            await channel.exchange_delete(exchange(derived))
