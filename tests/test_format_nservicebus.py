"""NServiceBus's wire format (contract §16): its messages, as the RabbitMQ transport publishes them
(fixtures under tests/fixtures/nservicebus/, each citing the source it follows), read into
envelopes; its catalogue entries checked and bound; and, through a running service on the real
broker and store, operations moved to their states, seen over HTTP and Socket.IO, duplicates
dropped and bad input kept in the dead-letter workbench with its reason."""

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

from operations.amqp.catalogue import Catalogue
from operations.amqp.queues import QueueType
from operations.envelope import Envelope
from operations.errors import CatalogueError, EnvelopeError
from operations.formats import FORMATS
from operations.formats.nservicebus import FORMAT, exchange_of, full_names
from operations.settings import Settings
from operations.states import MessageKind, State
from operations.wire import Binding, ExchangeKind
from tests.api import bearer
from tests.dead_letter_support import letters
from tests.hub_support import live_clients
from tests.nservicebus_support import Delivery, delivery, publish, publish_delivery
from tests.support import RunningService, eventually, start_service

Token = Callable[..., str]
LIMIT = 262_144
CONVERSATION = "a3b1c2d4-0e5f-4a6b-9c7d-b1a4011e2c3f"
COMMAND_ID = "6f1e2d3c-4b5a-4978-8a6b-b1a4011e2d01"
USER = "b5c9e1f0-2a3b-4c5d-8e9f-0a1b2c3d4e5f"
QUALIFIED = ", Shop.Messages, Version=1.0.0.0, Culture=neutral, PublicKeyToken=null"
SHOP = {
    "format": "nservicebus",
    "commands": ["Shop.Messages.PlaceOrder"],
    "events": ["Shop.Messages.OrderPlaced"],
    "rejectedEvents": ["Shop.Messages.PlaceOrderRejected"],
}
CATALOGUE = Catalogue.from_document({"shop": SHOP})
(ENTRY,) = CATALOGUE.entries


def read(message: Delivery, catalogue: Catalogue = CATALOGUE) -> Envelope:
    return catalogue.read(message, LIMIT)


def refused(message: Delivery, catalogue: Catalogue = CATALOGUE) -> str:
    with pytest.raises(EnvelopeError) as caught:
        read(message, catalogue)
    return str(caught.value)


# --- reading ---------------------------------------------------------------------------------


def test_a_sent_command_makes_its_conversation_pending() -> None:
    envelope = read(delivery("place_order"))
    assert envelope == Envelope(
        message="Shop.Messages.PlaceOrder",
        exchange="Shop.Messages:PlaceOrder",
        kind=MessageKind.COMMAND,
        state=State.PENDING,
        operation_id=CONVERSATION,
        message_id=COMMAND_ID,
        user_id=USER,
        name="place_order",
        sent_at=dt.datetime(2026, 12, 7, 19, 2, 11, 482913, tzinfo=dt.UTC),
    )


def test_a_published_event_completes_it() -> None:
    envelope = read(delivery("order_placed"))
    assert (envelope.message, envelope.kind, envelope.state) == (
        "Shop.Messages.OrderPlaced",
        MessageKind.EVENT,
        State.COMPLETED,
    )
    assert (envelope.operation_id, envelope.message_id) == (
        CONVERSATION,
        "7a2b3c4d-5e6f-4071-8a9b-b1a4011e2f55",
    )
    assert (envelope.name, envelope.user_id, envelope.problems) == ("order_placed", USER, ())
    assert (envelope.code, envelope.reason) == (None, None)


def test_a_rejected_event_carries_the_bodys_code_and_reason() -> None:
    envelope = read(delivery("place_order_rejected"))
    assert (envelope.state, envelope.kind) == (State.REJECTED, MessageKind.REJECTED_EVENT)
    assert (envelope.code, envelope.reason) == ("out_of_stock", "Only 2 of SKU-1138 left")
    assert (envelope.operation_id, envelope.name) == (CONVERSATION, "place_order_rejected")


def test_header_values_may_arrive_as_bytes() -> None:
    as_sent = delivery("place_order_rejected")
    as_bytes = {key: bytearray(str(value).encode()) for key, value in as_sent.headers.items()}
    assert read(replace(as_sent, headers=as_bytes)) == read(as_sent)


@pytest.mark.parametrize(
    ("saga", "state"), [("Completed", State.COMPLETED), ("rejected", State.REJECTED)]
)
def test_the_saga_header_overrides_the_kind(saga: str, state: State) -> None:
    envelope = read(delivery("place_order", {"Saga": saga}))
    assert envelope.state is state and envelope.kind is MessageKind.COMMAND


def test_an_unknown_saga_value_counts_as_absent() -> None:
    assert read(delivery("order_placed", {"Saga": "Compensating"})).state is State.COMPLETED


def test_the_correlation_id_option_reads_nservicebus_correlation_id() -> None:
    catalogue = Catalogue.from_document({"shop": {**SHOP, "operationId": "correlationId"}})
    for name in ("place_order", "order_placed"):
        # the transport also copies it to the AMQP correlation_id; the header is read
        message = delivery(name, correlation_id="something-else")
        assert read(message, catalogue).operation_id == COMMAND_ID
    conversation = Catalogue.from_document({"shop": {**SHOP, "operationId": "conversationId"}})
    assert read(delivery("order_placed"), conversation).operation_id == CONVERSATION


def test_ids_come_from_the_headers_not_the_amqp_properties() -> None:
    # the transport copies them to message_id and correlation_id; the contract names the headers
    envelope = read(delivery("order_placed", message_id="amqp-id", correlation_id="amqp-corr"))
    assert (envelope.message_id, envelope.operation_id) == (
        "7a2b3c4d-5e6f-4071-8a9b-b1a4011e2f55",
        CONVERSATION,
    )
    assert "no NServiceBus.MessageId header" in refused(
        delivery("order_placed", {"NServiceBus.MessageId": None}, message_id="amqp-id")
    )


def test_the_operation_id_is_a_guid_in_one_spelling() -> None:
    upper = delivery("order_placed", {"NServiceBus.ConversationId": CONVERSATION.upper()})
    assert read(upper).operation_id == CONVERSATION
    plain = uuid.UUID(CONVERSATION).hex
    assert read(delivery("order_placed", {"NServiceBus.ConversationId": plain})).operation_id == (
        CONVERSATION
    )


def test_no_conversation_id_leaves_the_operation_id_empty() -> None:
    # then the pipeline ignores the message, as it does a Convey message without correlation id
    assert read(delivery("order_placed", {"NServiceBus.ConversationId": None})).operation_id is None


def test_the_user_header_is_the_one_the_entry_names() -> None:
    catalogue = Catalogue.from_document({"shop": {**SHOP, "userHeader": "X-Shop-Customer"}})
    message = delivery("order_placed", {"X-Shop-Customer": "CUSTOMER-7"})
    assert read(message, catalogue).user_id == "CUSTOMER-7"
    assert read(delivery("order_placed", {"UserId": None})).user_id is None
    unprintable = read(delivery("order_placed", {"UserId": "a\nb"}))
    assert unprintable.user_id is None
    assert unprintable.problems == ("headers.UserId: not printable, or longer than 200 characters",)


def test_time_sent_is_read_in_utc_to_the_microsecond() -> None:
    envelope = read(delivery("order_placed"))
    assert envelope.sent_at == dt.datetime(2026, 12, 7, 19, 2, 11, 913402, tzinfo=dt.UTC)
    assert read(delivery("order_placed", {"NServiceBus.TimeSent": None})).sent_at is None


@pytest.mark.parametrize(
    "sent",
    [
        "2026-12-07T19:02:11.913402Z",  # ISO 8601 is not NServiceBus's format
        "2026-12-07 19:02:11:913 Z",
        "2026-13-07 19:02:11:913402 Z",
        "2026-12-07 19:02:11:９１３４０２ Z",
    ],
)
def test_an_unreadable_time_sent_is_a_problem(sent: str) -> None:
    envelope = read(delivery("order_placed", {"NServiceBus.TimeSent": sent}))
    assert envelope.sent_at is None and envelope.state is State.COMPLETED
    assert envelope.problems == (
        "headers.NServiceBus.TimeSent: not a time as 'yyyy-MM-dd HH:mm:ss:ffffff Z'",
    )


def test_the_first_listed_of_several_enclosed_types_decides() -> None:
    message = delivery("express_order_placed")
    # Published to Shop.Messages:ExpressOrderPlaced, which the transport binds to the exchange of
    # each ancestor: a subscriber of OrderPlaced gets it.
    envelope = FORMAT.read(message, ENTRY, LIMIT)
    assert (envelope.message, envelope.state, envelope.name) == (
        "Shop.Messages.OrderPlaced",
        State.COMPLETED,
        "order_placed",
    )
    both = Catalogue.from_document(
        {
            "shop": {
                **SHOP,
                "events": ["Shop.Messages.OrderPlaced", "Shop.Messages.ExpressOrderPlaced"],
            }
        }
    )
    assert read(message, both).message == "Shop.Messages.ExpressOrderPlaced"


def test_a_subclass_on_its_own_exchange_is_read_as_the_first_listed_of_its_types() -> None:
    # The transport binds the subclass's exchange to its ancestors', so it reaches the queue
    # through Shop.Messages:OrderPlaced while arriving under its own exchange's name.
    message = delivery("express_order_placed")
    assert CATALOGUE.bindings and all(
        binding.exchange != message.exchange for binding in CATALOGUE.bindings
    )
    envelope = read(message)
    assert (envelope.message, envelope.state, envelope.exchange) == (
        "Shop.Messages.OrderPlaced",
        State.COMPLETED,
        "Shop.Messages:ExpressOrderPlaced",
    )
    # Unmarked, the same message is no NServiceBus message: not read.
    unmarked = delivery("express_order_placed", {"NServiceBus.MessageId": None})
    assert "is not in the catalogue" in refused(unmarked)


def test_enclosed_types_split_on_semicolons_and_end_at_the_first_comma_outside_brackets() -> None:
    generic = "Shop.Messages.Envelope`1[[Shop.Messages.OrderPlaced" + QUALIFIED + "]]" + QUALIFIED
    nested = "Shop.Messages.Orders+Placed" + QUALIFIED
    assert list(full_names(f"{generic};{nested}; Shop.Messages.IOrderEvent{QUALIFIED}")) == [
        "Shop.Messages.Envelope`1[[Shop.Messages.OrderPlaced" + QUALIFIED + "]]",
        "Shop.Messages.Orders+Placed",
        "Shop.Messages.IOrderEvent",
    ]
    assert list(full_names("Shop.Messages.OrderPlaced")) == ["Shop.Messages.OrderPlaced"]
    # a generic wrapping a listed type is not that type
    wrapped = delivery("order_placed", {"NServiceBus.EnclosedMessageTypes": generic})
    assert "is in the catalogue" in refused(wrapped)
    nested_entry = Catalogue.from_document(
        {"shop": {"format": "nservicebus", "events": ["Shop.Messages.Orders+Placed"]}}
    )
    inner = delivery(
        "order_placed",
        {"NServiceBus.EnclosedMessageTypes": nested},
        exchange="Shop.Messages:Placed",
    )
    envelope = read(inner, nested_entry)
    assert (envelope.message, envelope.name) == ("Shop.Messages.Orders+Placed", "placed")


def test_a_retried_copy_reads_as_the_original() -> None:
    original, copy = read(delivery("order_placed")), read(delivery("order_placed_retried"))
    assert copy == original  # the same message id: the store drops it as a duplicate


def test_a_body_is_read_only_for_a_rejection_and_an_unreadable_one_is_a_problem() -> None:
    assert read(delivery("place_order", body=b"<PlaceOrder/>")).problems == ()
    envelope = read(delivery("place_order_rejected", body=b"<PlaceOrderRejected/>"))
    assert envelope.state is State.REJECTED and (envelope.code, envelope.reason) == (None, None)
    assert envelope.problems == ("body: not valid JSON",)


def test_an_oversized_body_is_a_problem_not_a_refusal() -> None:
    message = delivery("place_order_rejected")
    envelope = FORMAT.read(message, ENTRY, len(message.body) - 1)
    assert envelope.state is State.REJECTED and envelope.code is None
    assert envelope.problems == (
        f"body: {len(message.body)} bytes exceeds the limit of {len(message.body) - 1}, not read",
    )


# --- dead letters ----------------------------------------------------------------------------


def test_no_message_id_header_is_not_an_nservicebus_message() -> None:
    reason = refused(delivery("order_placed", {"NServiceBus.MessageId": None}))
    assert reason == (
        "headers: not an NServiceBus message: no NServiceBus.MessageId header,"
        " on 'Shop.Messages:OrderPlaced'"
    )
    blank = refused(delivery("order_placed", {"NServiceBus.MessageId": "  "}))
    assert "no NServiceBus.MessageId header" in blank


def test_an_unlisted_type_is_refused() -> None:
    other = "Shop.Messages.OrderShipped" + QUALIFIED
    reason = refused(delivery("order_placed", {"NServiceBus.EnclosedMessageTypes": other}))
    assert reason == (
        "headers: NServiceBus.EnclosedMessageTypes: none of 'Shop.Messages.OrderShipped'"
        " on 'Shop.Messages:OrderPlaced' is in the catalogue"
    )


@pytest.mark.parametrize("enclosed", [None, "", " ; ", b"\xff"])
def test_no_enclosed_types_is_refused(enclosed: str | bytes | None) -> None:
    reason = refused(delivery("order_placed", {"NServiceBus.EnclosedMessageTypes": enclosed}))
    assert reason == (
        "headers: no NServiceBus.EnclosedMessageTypes: the message's type is unknown"
        " (on 'Shop.Messages:OrderPlaced')"
    )


def test_ids_too_long_are_refused_naming_the_header() -> None:
    long_id = "x" * 201
    reason = refused(delivery("order_placed", {"NServiceBus.MessageId": long_id}))
    assert reason == "headers.NServiceBus.MessageId: must be at most 200 characters"
    reason = refused(delivery("order_placed", {"NServiceBus.ConversationId": long_id}))
    assert reason.startswith("headers.NServiceBus.ConversationId: must be printable")
    binary = refused(delivery("order_placed", {"NServiceBus.MessageId": b"\xff\xfe"}))
    assert binary == "headers.NServiceBus.MessageId: expected UTF-8 text"


def masstransit_envelope() -> Delivery:
    """A MassTransit envelope of OrderPlaced, mis-sent to NServiceBus's exchange of that type."""
    message_id = str(uuid.uuid4())
    body = {
        "messageId": message_id,
        "conversationId": CONVERSATION,
        "messageType": ["urn:message:Shop.Messages:OrderPlaced"],
        "message": {"orderId": "o-1"},
        "sentTime": "2026-12-07T19:02:11.9134020Z",
        "headers": {},
    }
    return Delivery(
        exchange="Shop.Messages:OrderPlaced",
        body=orjson.dumps(body),
        message_id=message_id,
        content_type="application/vnd.masstransit+json",
    )


FOREIGN = {
    "convey": (
        Delivery(
            exchange="Shop.Messages:OrderPlaced",
            routing_key="order_placed",
            headers={"message_context": '{"user": {"id": "u-1"}}'},
            correlation_id=CONVERSATION,
            message_id="m-1",
        ),
        "headers: not an NServiceBus message (a Convey message?): no NServiceBus.MessageId header,"
        " on 'Shop.Messages:OrderPlaced'",
    ),
    "masstransit": (
        masstransit_envelope(),
        "format: a MassTransit message on"
        " 'Shop.Messages:OrderPlaced', which the catalogue lists as NServiceBus's",
    ),
    "masstransit raw json": (
        # even one that carries an NServiceBus message id is not misread
        delivery("order_placed", {"MT-MessageType": "urn:message:Shop.Messages:OrderPlaced"}),
        "format: a MassTransit message on 'Shop.Messages:OrderPlaced', which the catalogue lists"
        " as NServiceBus's",
    ),
    "cloudevents binary": (
        Delivery(
            exchange="Shop.Messages:OrderPlaced",
            headers={
                "ce-specversion": "1.0",
                "ce-id": "e-1",
                "ce-type": "Shop.Messages.OrderPlaced",
            },
        ),
        "format: a CloudEvent on 'Shop.Messages:OrderPlaced', which the catalogue lists as"
        " NServiceBus's",
    ),
    "cloudevents structured": (
        Delivery(
            exchange="Shop.Messages:OrderPlaced",
            body=b'{"specversion": "1.0", "id": "e-1", "type": "Shop.Messages.OrderPlaced"}',
            content_type="application/cloudevents+json; charset=utf-8",
        ),
        "format: a CloudEvent on"
        " 'Shop.Messages:OrderPlaced', which the catalogue lists as NServiceBus's",
    ),
}


@pytest.mark.parametrize("bus", list(FOREIGN))
def test_another_buss_message_on_an_nservicebus_exchange_is_refused(bus: str) -> None:
    message, reason = FOREIGN[bus]
    assert refused(message) == reason


# --- the catalogue ---------------------------------------------------------------------------


def test_the_format_is_registered_under_its_name() -> None:
    assert FORMATS["nservicebus"] is FORMAT
    assert FORMAT.options == {"operationId", "userHeader"}


def test_each_listed_type_binds_its_fanout_exchange_once() -> None:
    catalogue = Catalogue.from_document(
        {
            "shop": {
                **SHOP,
                "events": ["Shop.Messages.OrderPlaced", "Shop.Messages.Orders+Placed"],
            },
            "billing": {"format": "nservicebus", "events": ["Billing.Contracts.InvoiceIssued"]},
        }
    )
    fanout = ExchangeKind.FANOUT
    assert catalogue.bindings == [
        Binding("Shop.Messages:PlaceOrder", fanout),
        Binding("Shop.Messages:OrderPlaced", fanout),
        Binding("Shop.Messages:Placed", fanout),
        Binding("Shop.Messages:PlaceOrderRejected", fanout),
        Binding("Billing.Contracts:InvoiceIssued", fanout),
    ]


def test_a_nested_types_exchange_is_named_after_its_own_name() -> None:
    # ConventionalRoutingTopology: type.Namespace + ":" + type.Name
    assert exchange_of("Shop.Messages.OrderPlaced") == "Shop.Messages:OrderPlaced"
    assert exchange_of("Shop.Messages.Orders+Placed") == "Shop.Messages:Placed"
    assert exchange_of("A.B.C+D+E") == "A.B:E"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"events": ["OrderPlaced"]}, "invalid .NET type name 'OrderPlaced'"),
        ({"events": ["Shop.Messages:OrderPlaced"]}, "invalid .NET type name"),
        ({"commands": ["Shop.Messages.Envelope`1"]}, "invalid .NET type name"),
        ({"events": ["order_placed"]}, "invalid .NET type name"),
        ({"operationId": "messageId"}, "'conversationId' (the default) or 'correlationId'"),
        ({"operationId": 1}, "needs a string 'operationId'"),
        ({"userHeader": ""}, "invalid 'userHeader'"),
        ({"userHeader": "  "}, "invalid 'userHeader'"),
        ({"exchange": "shop"}, "'exchange' does not apply to the nservicebus format"),
        ({"routingKeys": ["a"]}, "'routingKeys' does not apply to the nservicebus format"),
    ],
)
def test_an_entry_is_checked(change: dict[str, Any], words: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        Catalogue.from_document({"shop": {**SHOP, **change}}, source="test.json")
    assert words in str(caught.value) and "'shop'" in str(caught.value)


# --- through a running service -------------------------------------------------------------


@pytest.fixture(params=list(QueueType))
async def shop(
    request: pytest.FixtureRequest,
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    tmp_path: Path,
) -> AsyncIterator[RunningService]:
    """The service reading the shop's NServiceBus messages, keeping its dead letters, on classic
    and quorum queues."""
    path = tmp_path / "messages.json"
    path.write_text(json.dumps({"shop": SHOP}), encoding="utf-8")
    kept = replace(
        settings,
        messages_file=path,
        dead_letter_keep=True,
        sagas=False,
        queue_type=request.param,
    )
    async with start_service(kept) as running:
        yield running


@pytest.fixture
async def shop_http(shop: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shop.url, timeout=30) as client:
        yield client


@pytest.fixture
async def channel(
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    async with amqp.channel(publisher_confirms=True) as opened:
        yield opened


async def record(
    http: httpx.AsyncClient, token: Token, op: str, user: str, state: str
) -> dict[str, Any]:
    async def fetch() -> dict[str, Any] | None:
        response = await http.get(f"/operations/{op}", headers=bearer(token(user)))
        if response.status_code != 200 or response.json()["state"] != state:
            return None
        found: dict[str, Any] = response.json()
        return found

    return await eventually(fetch, f"{op} to be {state} over HTTP")


async def test_a_command_then_its_event_complete_the_operation_over_http_and_socket(
    shop: RunningService,
    shop_http: httpx.AsyncClient,
    channel: aio_pika.abc.AbstractChannel,
    token: Token,
) -> None:
    user, op = str(uuid.uuid4()), str(uuid.uuid4())
    async with live_clients(shop.url) as clients:
        owner, stranger = clients(), clients()
        await owner.connect({"token": token(user)})
        await stranger.connect({"token": token(str(uuid.uuid4()))})
        command_id = await publish(channel, "place_order", op, user)
        pushed = await owner.wait_for_state(op, "pending")
        pending = await record(shop_http, token, op, user, "pending")
        event_id = await publish(channel, "order_placed", op.upper(), user)
        done = await owner.wait_for_state(op, "completed")
        completed = await record(shop_http, token, op, user, "completed")
    assert (pushed["userId"], pushed["name"], pushed["version"]) == (user, "place_order", 1)
    assert (pending["userId"], pending["name"], pending["version"]) == (user, "place_order", 1)
    assert (done["name"], done["version"], done["code"]) == ("order_placed", 2, None)
    assert (completed["userId"], completed["version"]) == (user, 2)
    assert stranger.records(op) == []
    response = await shop_http.get(f"/operations/{op}/history", headers=bearer(token(user)))
    history = [
        (entry["message"], entry["messageId"], entry["state"], entry["sentAt"])
        for entry in response.json()["items"]
    ]
    assert history == [
        ("Shop.Messages.PlaceOrder", command_id, "pending", "2026-12-07T19:02:11.482Z"),
        ("Shop.Messages.OrderPlaced", event_id, "completed", "2026-12-07T19:02:11.913Z"),
    ]


async def test_a_command_then_a_rejected_event_reject_it_with_reason_and_code(
    shop: RunningService,
    shop_http: httpx.AsyncClient,
    channel: aio_pika.abc.AbstractChannel,
    token: Token,
) -> None:
    user, op = str(uuid.uuid4()), str(uuid.uuid4())
    async with live_clients(shop.url) as clients:
        owner = clients()
        await owner.connect({"token": token(user)})
        # header values as byte arrays, as some .NET publishers' long strings arrive
        await publish(channel, "place_order", op, user, as_bytes=True)
        await owner.wait_for_state(op, "pending")
        await publish(channel, "place_order_rejected", op, user, as_bytes=True)
        pushed = await owner.wait_for_state(op, "rejected")
    rejected = await record(shop_http, token, op, user, "rejected")
    for seen in (pushed, rejected):
        assert (seen["code"], seen["reason"]) == ("out_of_stock", "Only 2 of SKU-1138 left")
        assert (seen["userId"], seen["name"], seen["version"]) == (
            user,
            "place_order_rejected",
            2,
        )


async def test_a_copy_with_the_same_message_id_changes_nothing(
    shop: RunningService,
    shop_http: httpx.AsyncClient,
    channel: aio_pika.abc.AbstractChannel,
    token: Token,
) -> None:
    user, op, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    message_id = await publish(channel, "order_placed", op, user)
    await record(shop_http, token, op, user, "completed")
    # back from the error queue, retried: the same NServiceBus.MessageId, fault headers added
    await publish(channel, "order_placed_retried", op, user, message_id)
    # the same id in another conversation is another operation's message
    await publish(channel, "order_placed", other, user, message_id)
    await record(shop_http, token, other, user, "completed")
    counted = shop.service.metrics.messages
    assert counted.value(kind="event", outcome="duplicate") == 1
    assert counted.value(kind="event", outcome="stale") == 0
    assert counted.value(kind="event", outcome="applied") == 2
    unchanged = await record(shop_http, token, op, user, "completed")
    assert unchanged["version"] == 1
    assert await letters(shop_http, bearer(token("ops", "admin"))) == []


async def test_bad_input_lands_in_the_workbench_with_its_reason(
    shop: RunningService,
    shop_http: httpx.AsyncClient,
    channel: aio_pika.abc.AbstractChannel,
    token: Token,
) -> None:
    user, late = str(uuid.uuid4()), str(uuid.uuid4())
    other_type = "Shop.Messages.OrderShipped" + QUALIFIED
    bad = {
        "headers: not an NServiceBus message: no NServiceBus.MessageId header, on"
        " 'Shop.Messages:OrderPlaced'": delivery("order_placed", {"NServiceBus.MessageId": None}),
        "headers: NServiceBus.EnclosedMessageTypes: none of 'Shop.Messages.OrderShipped' on"
        " 'Shop.Messages:OrderPlaced' is in the catalogue": delivery(
            "order_placed", {"NServiceBus.EnclosedMessageTypes": other_type}
        ),
        "headers: no NServiceBus.EnclosedMessageTypes: the message's type is unknown (on"
        " 'Shop.Messages:OrderPlaced')": delivery(
            "place_order",
            {"NServiceBus.EnclosedMessageTypes": None},
            exchange="Shop.Messages:OrderPlaced",
        ),
    }
    bad.update({reason: message for message, reason in FOREIGN.values()})
    for message in bad.values():
        await publish_delivery(channel, message)
    # applied in part: the time cannot be read, the rest is applied
    unreadable_time = delivery(
        "order_placed",
        {
            "NServiceBus.TimeSent": "07/12/2026 19:02",
            "NServiceBus.ConversationId": late,
            "UserId": user,
        },
    )
    await publish_delivery(channel, unreadable_time)
    await record(shop_http, token, late, user, "completed")

    admin = bearer(token("ops", "admin"))

    async def kept() -> bool:
        return len({letter["id"] for letter in await letters(shop_http, admin)}) > len(bad)

    await eventually(kept, "every dead letter to be kept")
    kept_letters = await letters(shop_http, admin)  # read again, now that none is arriving
    assert len(kept_letters) == len(bad) + 1
    by_reason = {letter["reason"]: letter for letter in kept_letters}
    in_part = "headers.NServiceBus.TimeSent: not a time as 'yyyy-MM-dd HH:mm:ss:ffffff Z'"
    assert set(by_reason) == {*bad, in_part}
    assert {letter["exchange"] for letter in kept_letters} == {"Shop.Messages:OrderPlaced"}
    assert by_reason[in_part]["disposition"] == "applied-in-part"
    assert {by_reason[reason]["disposition"] for reason in bad} == {"not-applied"}
