"""The simulated Pacco services answer .NET-shaped commands over the real RabbitMQ as Convey does
(contract §7): same correlation id, new message id, context and Saga headers carried over; the
order found for a reservation, malformed commands, latency, and the rule table."""

from __future__ import annotations

import re
import time
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from operations.pacco.demo import SERVICES
from operations.pacco.demo.convey import forwarded_headers
from operations.states import MessageKind
from tests.demo_support import CUSTOMER, ORDER, PARCEL, VEHICLE, WHEN, Replies, body, simulated
from tests.support import PACCO, Publisher, context, new_id

HEX_ID = re.compile(r"[0-9a-f]{32}")

# (command, PascalCase body as .NET sends it, reply, its exchange, camelCase body expected)
SUCCESSES = [
    (
        "create_order",
        {"OrderId": ORDER, "CustomerId": CUSTOMER},
        "order_created",
        "orders",
        {"orderId": ORDER, "customerId": CUSTOMER},
    ),
    (
        "add_parcel_to_order",
        {"OrderId": ORDER, "ParcelId": PARCEL, "CustomerId": CUSTOMER},
        "parcel_added_to_order",
        "orders",
        {"orderId": ORDER, "parcelId": PARCEL},
    ),
    (
        "assign_vehicle_to_order",
        {"OrderId": ORDER, "VehicleId": VEHICLE, "DeliveryDate": WHEN},
        "vehicle_assigned_to_order",
        "orders",
        {"orderId": ORDER, "vehicleId": VEHICLE},
    ),
    (
        "cancel_order",
        {"OrderId": ORDER, "Reason": "saga compensation"},
        "order_canceled",
        "orders",
        {"orderId": ORDER, "reason": "saga compensation"},
    ),
    (
        "reserve_resource",
        {"ResourceId": VEHICLE, "DateTime": WHEN, "Priority": 1, "CustomerId": CUSTOMER},
        "resource_reserved",
        "availability",
        {"resourceId": VEHICLE, "dateTime": WHEN},
    ),
    (
        "release_resource",
        {"ResourceId": VEHICLE, "DateTime": WHEN},
        "resource_reservation_released",
        "availability",
        {"resourceId": VEHICLE, "dateTime": WHEN},
    ),
    (
        "add_resource",
        {"ResourceId": VEHICLE, "Tags": ["truck"]},
        "resource_added",
        "availability",
        {"resourceId": VEHICLE},
    ),
    ("add_vehicle", {"VehicleId": VEHICLE}, "vehicle_added", "vehicles", {"vehicleId": VEHICLE}),
    (
        "update_vehicle",
        {"VehicleId": VEHICLE},
        "vehicle_updated",
        "vehicles",
        {"vehicleId": VEHICLE},
    ),
    (
        "delete_vehicle",
        {"VehicleId": VEHICLE},
        "vehicle_deleted",
        "vehicles",
        {"vehicleId": VEHICLE},
    ),
]


@pytest.mark.parametrize(("command", "sent", "reply", "exchange", "expected"), SUCCESSES)
async def test_a_command_gets_its_reply_shaped_like_convey(
    amqp_url: str,
    publisher: Publisher,
    replies: Replies,
    command: str,
    sent: dict[str, Any],
    reply: str,
    exchange: str,
    expected: dict[str, Any],
) -> None:
    op, user = new_id(), new_id()
    sent_context = context(user, "make_order")
    assert isinstance(sent_context, bytearray)
    async with simulated(amqp_url):
        sent_id = await publisher.publish(
            command, op, saga="Pending", body=sent, raw_context=sent_context
        )
        answered = await replies.one()

    assert (answered.exchange, answered.routing_key) == (exchange, reply)
    assert answered.correlation_id == op
    assert answered.message_id is not None and HEX_ID.fullmatch(answered.message_id)
    assert answered.message_id != sent_id
    headers = answered.headers
    assert type(headers["message_context"]) is bytearray
    assert headers["message_context"] == sent_context
    assert headers["Saga"] == bytearray(b"Pending")
    assert answered.content_type == "application/json"
    assert answered.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert answered.timestamp is not None
    assert body(answered) == expected


async def test_text_headers_are_forwarded_as_text(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    op = new_id()
    sent_context = context(new_id(), style="python")
    assert isinstance(sent_context, str)
    async with simulated(amqp_url):
        await publisher.publish(
            "add_vehicle",
            op,
            body={"vehicleId": VEHICLE},
            raw_context=sent_context,
            headers={"saga": "completed"},
        )
        answered = await replies.one()
    assert answered.headers == {"message_context": sent_context, "saga": "completed"}
    assert body(answered) == {"vehicleId": VEHICLE}


def test_bytes_headers_go_out_as_the_same_octets_and_others_stay_behind() -> None:
    raw = b"\xff\xfe not UTF-8"
    forwarded = forwarded_headers({"message_context": raw, "SAGA": b"Rejected", "x-other": "y"})
    assert forwarded == {"message_context": bytearray(raw), "SAGA": bytearray(b"Rejected")}
    assert all(type(value) is bytearray for value in forwarded.values())


async def test_resource_reserved_approves_its_order(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    op, order = new_id(), new_id()
    async with simulated(amqp_url):
        await publisher.publish(
            "resource_reserved",
            op,
            saga="Pending",
            body={"ResourceId": VEHICLE, "DateTime": WHEN, "OrderId": order},
        )
        # The event itself is a reply of the availability service, so the queue sees it too.
        event, approved = await replies.take(2)
    assert event.routing_key == "resource_reserved"
    assert (approved.exchange, approved.routing_key) == ("orders", "order_approved")
    assert approved.correlation_id == op
    assert approved.headers["Saga"] == bytearray(b"Pending")
    assert body(approved) == {"orderId": order}


async def test_a_reservation_leads_to_the_order_approval(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    op, order = new_id(), new_id()
    async with simulated(amqp_url):
        await publisher.publish(
            "reserve_resource",
            op,
            saga="Pending",
            body={"resourceId": VEHICLE, "dateTime": WHEN, "orderId": order},
        )
        reserved, approved = await replies.take(2)
    assert reserved.routing_key == "resource_reserved"
    assert body(reserved) == {"resourceId": VEHICLE, "dateTime": WHEN, "orderId": order}
    assert approved.routing_key == "order_approved"
    assert body(approved) == {"orderId": order}
    assert approved.correlation_id == reserved.correlation_id == op
    assert approved.message_id != reserved.message_id


async def test_without_an_order_id_the_order_is_found_by_its_vehicle(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    op, order, vehicle, stranger = new_id(), new_id(), new_id(), new_id()
    async with simulated(amqp_url):
        await publisher.publish(
            "assign_vehicle_to_order", op, body={"orderId": order, "vehicleId": vehicle}
        )
        assert (await replies.one()).routing_key == "vehicle_assigned_to_order"
        await publisher.publish(
            "reserve_resource", op, body={"resourceId": vehicle, "dateTime": WHEN}
        )
        reserved, approved = await replies.take(2)
        await publisher.publish(
            "reserve_resource", new_id(), body={"resourceId": stranger, "dateTime": WHEN}
        )
        _, not_found = await replies.take(2)
    assert body(reserved) == {"resourceId": vehicle, "dateTime": WHEN}
    assert (approved.routing_key, body(approved)) == ("order_approved", {"orderId": order})
    assert not_found.routing_key == "order_for_reserved_vehicle_not_found"
    assert body(not_found)["code"] == "order_for_reserved_vehicle_not_found"
    assert body(not_found)["resourceId"] == stranger


async def test_malformed_commands_are_rejected_and_the_service_keeps_answering(
    amqp_url: str,
    publisher: Publisher,
    replies: Replies,
    connection: AbstractRobustConnection,
) -> None:
    bad_json, no_customer, wrong_type, good = new_id(), new_id(), new_id(), new_id()
    async with simulated(amqp_url):
        await publisher.publish("create_order", bad_json, saga="Pending", body=b"{not json")
        await publisher.publish("create_order", no_customer, body={"OrderId": ORDER})
        await publisher.publish("add_vehicle", wrong_type, body={"vehicleId": 42})
        await publisher.publish("create_order", good, body={"orderId": ORDER, "customerId": "c"})
        answered = {m.correlation_id: m for m in await replies.take(4)}

    not_json = answered[bad_json]
    assert not_json.routing_key == "create_order_rejected"
    assert not_json.headers["Saga"] == bytearray(b"Pending")
    assert body(not_json) == {"code": "invalid_command", "reason": "body: not valid JSON"}
    missing = body(answered[no_customer])
    assert answered[no_customer].routing_key == "create_order_rejected"
    assert missing == {
        "code": "invalid_command",
        "reason": "body.customerId: is missing",
        "orderId": ORDER,
    }
    assert answered[wrong_type].routing_key == "add_vehicle_rejected"
    assert body(answered[wrong_type])["reason"] == "body.vehicleId: expected a string, got int"
    assert answered[good].routing_key == "order_created"
    async with connection.channel() as channel:
        for service in SERVICES:
            queue = await channel.declare_queue(service.queue, passive=True)
            assert queue.declaration_result.message_count == 0, service.queue


async def test_latency_overlaps_and_one_operation_keeps_its_order(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    op = new_id()
    parcels = [f"parcel-{index:02d}" for index in range(12)]
    started = time.monotonic()
    async with simulated(amqp_url, latency_ms=200):
        for parcel in parcels:
            await publisher.publish(
                "add_parcel_to_order", op, body={"orderId": ORDER, "parcelId": parcel}
            )
        answered = await replies.take(len(parcels))
    elapsed = time.monotonic() - started
    assert [body(m)["parcelId"] for m in answered] == parcels
    assert elapsed < 0.2 * len(parcels) / 2, f"replies were serialised ({elapsed:.2f}s)"


def test_the_rule_table_matches_the_pacco_catalogue() -> None:
    for service in SERVICES:
        for rule in service.replies:
            incoming = PACCO.lookup(rule.source, rule.message)
            assert incoming is not None and incoming.exchange == rule.source, rule.message
            assert incoming.kind is rule.kind, rule.message
            expected = [(rule.success, MessageKind.EVENT)]
            if rule.rejected is not None:
                expected.append((rule.rejected, MessageKind.REJECTED_EVENT))
            for name, kind in expected:
                reply = PACCO.lookup(service.exchange, name)
                assert reply is not None, name
                assert (reply.exchange, reply.kind) == (service.exchange, kind), name
