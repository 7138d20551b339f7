"""Failure plans for the simulated Pacco services: rates of one and zero over the real RabbitMQ, a
seed that repeats the same failures, and parsing (bad options are typed errors)."""

from __future__ import annotations

import random

import pytest

from operations.pacco.demo import FailurePlan, FailurePlanError, failable
from tests.demo_support import ORDER, VEHICLE, WHEN, Replies, body, simulated
from tests.support import Publisher, new_id


async def test_a_rate_of_one_rejects_every_reservation(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    ops = [new_id() for _ in range(3)]
    async with simulated(amqp_url, "reserve_resource=1.0"):
        for op in ops:
            await publisher.publish(
                "reserve_resource",
                op,
                saga="Pending",
                body={"ResourceId": VEHICLE, "DateTime": WHEN, "OrderId": ORDER},
            )
        await publisher.publish("create_order", ops[0], body={"orderId": ORDER, "customerId": "c"})
        answered = await replies.take(4)
    rejected = [m for m in answered if m.routing_key == "reserve_resource_rejected"]
    assert sorted(m.correlation_id or "" for m in rejected) == sorted(ops)
    for message in rejected:
        assert message.exchange == "availability"
        assert message.headers["Saga"] == bytearray(b"Pending")
        assert body(message) == {
            "code": "reserve_resource_failed",
            "reason": "reserve_resource was rejected by the simulated availability service",
            "resourceId": VEHICLE,
            "dateTime": WHEN,
            "orderId": ORDER,
        }
    assert [m.routing_key for m in answered if m not in rejected] == ["order_created"]


async def test_a_rate_of_zero_never_rejects(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    async with simulated(amqp_url, "reserve_resource=0.0"):
        for _ in range(10):
            await publisher.publish(
                "reserve_resource",
                new_id(),
                body={"resourceId": VEHICLE, "dateTime": WHEN, "orderId": ORDER},
            )
        answered = await replies.take(20)
    routing_keys = sorted(m.routing_key or "" for m in answered)
    assert routing_keys == ["order_approved"] * 10 + ["resource_reserved"] * 10


async def test_a_seed_repeats_the_same_failures(
    amqp_url: str, publisher: Publisher, replies: Replies
) -> None:
    async def outcomes() -> list[str]:
        async with simulated(amqp_url, "add_vehicle=0.5", seed=7):
            for index in range(16):
                await publisher.publish("add_vehicle", new_id(), body={"vehicleId": str(index)})
            answered = await replies.take(16)
        by_vehicle = {body(m)["vehicleId"]: m.routing_key or "" for m in answered}
        return [by_vehicle[str(index)] for index in range(16)]

    first, second = await outcomes(), await outcomes()
    assert first == second
    assert {"vehicle_added", "add_vehicle_rejected"} == set(first)


def test_failure_plans_parse_and_draw() -> None:
    plan = FailurePlan.parse(["reserve_resource=0.25", "cancel_order=1"], failable())
    assert dict(plan.rates) == {"reserve_resource": 0.25, "cancel_order": 1.0}
    assert plan.describe() == "cancel_order=1, reserve_resource=0.25"
    rng = random.Random(1)
    assert all(plan.fails("cancel_order", rng) for _ in range(200))
    assert not any(plan.fails("create_order", rng) for _ in range(200))
    assert 20 < sum(plan.fails("reserve_resource", rng) for _ in range(400)) < 180


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nope=1", "not a simulated command"),
        ("resource_reserved=1", "not a simulated command"),
        ("reserve_resource", "MESSAGE=RATE"),
        ("=0.5", "MESSAGE=RATE"),
        ("reserve_resource=abc", "from 0 to 1"),
        ("reserve_resource=1.5", "from 0 to 1"),
        ("reserve_resource=-0.1", "from 0 to 1"),
        ("reserve_resource=nan", "from 0 to 1"),
    ],
)
def test_a_bad_failure_option_is_a_typed_error(spec: str, says: str) -> None:
    with pytest.raises(FailurePlanError) as raised:
        FailurePlan.parse([spec], failable())
    assert raised.value.spec == spec
    assert says in raised.value.reason
    assert raised.value.code == "invalid_failure_plan"


def test_the_same_command_twice_is_refused() -> None:
    with pytest.raises(FailurePlanError, match="more than once"):
        FailurePlan.parse(["cancel_order=0.1", "cancel_order=0.2"], failable())
