"""The simulated Pacco services answer .NET-shaped commands over the real RabbitMQ as Convey does
(contract §7): same correlation id, new message id, context and Saga headers carried over."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from operations.demo import (
    SERVICES,
    DemoServices,
    FailurePlan,
    FailurePlanError,
    failable,
)
from operations.demo.convey import forwarded_headers
from operations.states import MessageKind
from operations.tokens import TokenVerifier
from tests.conftest import ROOT, SECRET
from tests.support import PACCO, Publisher, RunningService, context, eventually, new_id

HEX_ID = re.compile(r"[0-9a-f]{32}")


class Replies:
    """A temporary exclusive queue bound to every reply the simulated services publish."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue

    async def take(self, count: int, timeout: float = 10.0) -> list[AbstractIncomingMessage]:
        taken: list[AbstractIncomingMessage] = []

        async def enough() -> bool:
            while len(taken) < count:
                message = await self.queue.get(no_ack=True, fail=False)
                if message is None:
                    return False
                taken.append(message)
            return True

        await eventually(enough, f"{count} replies (got {len(taken)})", timeout=timeout)
        return taken

    async def one(self) -> AbstractIncomingMessage:
        return (await self.take(1))[0]


def body(message: AbstractIncomingMessage) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(message.body)
    return document


async def delete_demo_queues(connection: AbstractRobustConnection) -> None:
    async with connection.channel() as channel:
        for service in SERVICES:
            await channel.queue_delete(service.queue)


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    await delete_demo_queues(connection)
    yield connection
    await delete_demo_queues(connection)
    await connection.close()


@pytest.fixture
async def replies(connection: AbstractRobustConnection) -> AsyncIterator[Replies]:
    async with connection.channel() as channel:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for service in SERVICES:
            exchange = await channel.declare_exchange(
                service.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            for rule in service.replies:
                for reply in (rule.success, rule.rejected):
                    if reply is not None:
                        await queue.bind(exchange, routing_key=reply)
        yield Replies(queue)


def simulated(
    amqp_url: str, *fail: str, latency_ms: int = 0, seed: int | None = None
) -> DemoServices:
    return DemoServices(
        amqp_url,
        latency_ms=latency_ms,
        failures=FailurePlan.parse(fail, failable()),
        seed=seed,
    )


# (command, PascalCase body as .NET sends it, reply, its exchange, camelCase body expected)
ORDER, CUSTOMER, PARCEL, VEHICLE = new_id(), new_id(), new_id(), new_id()
WHEN = "2030-05-01T00:00:00"
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


async def run_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operations",
        "demo-services",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--fail", "nope=2"), "'nope' is not a simulated command"),
        (("--fail", "reserve_resource=2"), "the rate must be a number from 0 to 1"),
        (("--latency-ms", "-1"), "--latency-ms must not be negative"),
    ],
)
async def test_the_command_line_refuses_bad_options(args: tuple[str, ...], says: str) -> None:
    process = await run_cli(*args)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert says in stderr.decode()


async def test_the_command_line_runs_until_sigterm(
    amqp_url: str, connection: AbstractRobustConnection
) -> None:
    process = await run_cli("--fail", "reserve_resource=0.5", env={"OPERATIONS_AMQP_URL": amqp_url})
    assert process.stderr is not None
    try:
        started = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), timeout=30)
        await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    line = orjson.loads(started)
    assert line["level"] == "info"
    assert "orders (demo.orders)" in line["message"]
    assert "latency 50 ms" in line["message"]
    assert "reserve_resource=0.5" in line["message"]
    assert process.returncode == 0, rest.decode()
    assert b"stopping the simulated services" in rest


@contextlib.asynccontextmanager
async def cli_running(
    amqp_url: str, *args: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    """``operations demo-services`` as a process, with its start-up log line; stopped by SIGTERM
    (and killed by its PID if it does not stop)."""
    process = await run_cli(*args, env={"OPERATIONS_AMQP_URL": amqp_url})
    assert process.stderr is not None
    try:
        started = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        yield process, orjson.loads(started)
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), timeout=30)
        await asyncio.wait_for(process.wait(), timeout=30)
        assert process.returncode == 0, rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_an_explicit_latency_delays_each_reply_by_about_that_much(
    amqp_url: str, connection: AbstractRobustConnection, publisher: Publisher, replies: Replies
) -> None:
    latency = 1.0
    took: list[float] = []
    async with cli_running(amqp_url, "--latency-ms", "1000") as (_, started):
        assert "latency 1000 ms" in started["message"]
        for _ in range(3):
            op = new_id()
            begun = time.monotonic()
            await publisher.publish(
                "create_order", op, body={"orderId": ORDER, "customerId": CUSTOMER}
            )
            answered = await replies.one()
            took.append(time.monotonic() - begun)
            assert (answered.routing_key, answered.correlation_id) == ("order_created", op)
    assert min(took) >= latency - 0.005, took  # every reply waited the latency at least
    assert min(took) < 1.5 * latency, took  # ... once, not twice or in seconds
    assert max(took) < latency + 5, took


RECORDER = '''#!{python}
"""Stands in for {name} under a copy of scripts/run.sh and records how it was called."""
import json, os, sys

name, args, calls = {name!r}, sys.argv[1:], os.environ["RUN_SH_CALLS"]
with open(calls, "a") as out:
    seen = {{"name": name, "args": args, "pid": os.getpid()}}
    seen["amqp"] = os.environ.get("OPERATIONS_AMQP_URL")
    seen["redis"] = os.environ.get("OPERATIONS_REDIS_URL")
    out.write(json.dumps(seen) + "\\n")
if name == "python":  # the readiness probe: ready once serve has started
    with open(calls) as lines:
        sys.exit(0 if any(json.loads(line)["args"] == ["serve"] for line in lines) else 1)
if name == "operations" and args[0] == "token":
    print("token-for-" + args[args.index("--user") + 1])
elif name == "operations":
    os.execv({sleep!r}, ["sleep", "90"])
'''


def stub_run_sh(tree: Path) -> Path:
    """A copy of scripts/run.sh whose setup, services and ``.venv`` commands are recorders."""
    (tree / "scripts").mkdir(parents=True)
    (tree / ".venv" / "bin").mkdir(parents=True)
    run_sh = tree / "scripts" / "run.sh"
    shutil.copy2(ROOT / "scripts" / "run.sh", run_sh)
    sleep = shutil.which("sleep")
    assert sleep is not None
    for path in (
        "scripts/setup.sh",
        "scripts/services.sh",
        ".venv/bin/operations",
        ".venv/bin/python",
    ):
        stub = tree / path
        name = stub.name.removesuffix(".sh")
        stub.write_text(RECORDER.format(python=sys.executable, name=name, sleep=sleep))
        stub.chmod(0o755)
    return run_sh


def flag(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


async def test_run_sh_starts_the_demo_with_commands_the_cli_accepts(
    tmp_path: Path,
    amqp_url: str,
    connection: AbstractRobustConnection,
    service: RunningService,
    token: Any,
) -> None:
    """``make run`` (scripts/run.sh), with its setup, broker and ``operations`` commands recorded
    instead of run: it starts the services, then serve, waits for it, then demo-services and
    demo-orders, points them all at the started broker and Redis, prints working links for the
    user whose orders demo-orders places, and stops everything on SIGTERM. Then each recorded
    command line is run for real, so a flag the CLI does not accept fails here."""
    calls = tmp_path / "calls.jsonl"
    run_sh = stub_run_sh(tmp_path / "tree")
    drop = ("OPERATIONS_AMQP_URL", "OPERATIONS_REDIS_URL", "OPERATIONS_HOST", "OPERATIONS_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DEMO_")}
    env |= {"RUN_SH_CALLS": str(calls), "OPERATIONS_AMQP_PORT": "5999"}
    env |= {"OPERATIONS_REDIS_PORT": "6999"}
    process = await asyncio.create_subprocess_exec(
        "bash", str(run_sh), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    banner: list[str] = []
    try:
        while not banner or "Press Ctrl-C" not in banner[-1]:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
            assert line, f"run.sh ended early: {''.join(banner)}"
            banner.append(line.decode())
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130  # its INT/TERM trap

    recorded = [orjson.loads(line) for line in calls.read_bytes().splitlines()]
    steps = [(c["name"], c["args"][0] if c["args"] else "") for c in recorded]
    assert steps[:2] == [("setup", ""), ("services", "start")]
    assert steps[-1] == ("services", "stop")
    commands = {c["args"][0]: c for c in recorded if c["name"] == "operations"}
    assert set(commands) == {"serve", "demo-services", "demo-orders", "token"}
    probed = max(index for index, step in enumerate(steps) if step[0] == "python")
    assert steps.index(("operations", "serve")) < probed, "it never waited for /ready"
    assert steps.index(("operations", "demo-services")) > probed
    assert steps.index(("operations", "demo-orders")) > probed
    for command in ("serve", "demo-services", "demo-orders"):
        assert commands[command]["amqp"] == "amqp://guest:guest@127.0.0.1:5999/"
        assert commands[command]["redis"] == "redis://127.0.0.1:6999/0"
    assert commands["serve"]["args"] == ["serve"]
    started = [commands[c]["pid"] for c in ("serve", "demo-services", "demo-orders")]

    async def all_stopped() -> bool:
        return not any(alive(pid) for pid in started)

    await eventually(all_stopped, "run.sh to stop what it started", timeout=10)

    tokens = [c["args"] for c in recorded if c["args"][:1] == ["token"]]
    orders_args = commands["demo-orders"]["args"][1:]
    user = flag(orders_args, "--user", "demo-user")
    admins = [flag(args, "--user", "") for args in tokens if flag(args, "--role", "") == "admin"]
    assert admins, f"no admin token for the dashboard link: {tokens}"
    text = "".join(banner)
    base = "http://127.0.0.1:5005"
    assert f"{base}/live/#token=token-for-{user}" in text, text
    assert f"{base}/dashboard/#token=token-for-{admins[0]}" in text, text
    async with httpx.AsyncClient(base_url=service.url) as http:
        for page in ("/live/", "/dashboard/"):
            assert (await http.get(page)).status_code == 200, page

        for args in tokens:
            code, minted, errors = await run_operations(
                *args, env={"OPERATIONS_JWT_SECRET": SECRET}
            )
            assert code == 0, errors
            verified = TokenVerifier(SECRET).verify(minted.strip())
            assert verified.principal.user_id == flag(args, "--user", "")
            assert verified.principal.is_admin == (flag(args, "--role", "") == "admin")

        services_args = commands["demo-services"]["args"][1:]
        async with cli_running(amqp_url, *services_args) as (_, started):
            latency = flag(services_args, "--latency-ms", "50")
            assert f"latency {latency} ms" in started["message"], started

        where = {"OPERATIONS_HOST": "127.0.0.1", "OPERATIONS_PORT": str(service.port)}
        code, _, errors = await run_operations(
            "demo-orders",
            *orders_args,
            "--count",
            "1",
            env=where | {"OPERATIONS_JWT_SECRET": SECRET},
        )
        assert code == 0 and "placed" in errors, errors
        listed = await http.get("/operations", headers={"Authorization": f"Bearer {token(user)}"})
        assert [item["state"] for item in listed.json()["items"]] == ["pending"], listed.json()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def run_operations(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``operations ARGS`` to its end, without blocking the service running in this loop."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "operations", *args),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
