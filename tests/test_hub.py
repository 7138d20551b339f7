"""Live push over Socket.IO with a real client against the running service (contract §5)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio

from hub.hub import INITIALIZE_TIMEOUT_SECONDS
from operations.settings import Settings
from operations.store import Keys
from operations.tokens import encode, mint
from tests.conftest import SECRET
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, start_service

Token = Callable[..., str]


def uid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def clients(service: RunningService) -> AsyncIterator[Callable[[], LiveClient]]:
    made: list[LiveClient] = []

    def make() -> LiveClient:
        client = LiveClient(service.url)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def assert_monotonic(records: list[dict[str, Any]]) -> None:
    """Per operation: versions only rise, and nothing arrives after a terminal state."""
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        before = last.get(record["id"])
        if before is not None:
            assert record["version"] > before["version"], (before, record)
            assert before["state"] == "pending", (before, record)
        last[record["id"]] = record


async def test_owner_gets_events_other_users_do_not_and_admin_gets_all(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    alice, bob = uid(), uid()
    alice_socket, bob_socket, admin_socket = clients(), clients(), clients()
    await alice_socket.connect({"token": token(alice)})
    await bob_socket.connect({"token": token(bob)})
    await admin_socket.connect({"token": token("ops-person", "admin")})

    op, bobs_op = uid(), uid()
    await publisher.publish("create_order", op, user=alice, name="create_order")
    await publisher.publish("order_created", op, user=alice, name="create_order")
    await publisher.publish("create_order", bobs_op, user=bob)

    pending = await alice_socket.wait_for_state(op, "pending")
    completed = await alice_socket.wait_for_state(op, "completed")
    assert [e for e, _ in alice_socket.received] == ["operation_pending", "operation_completed"]
    assert (pending["version"], completed["version"]) == (1, 2)
    assert pending["cursor"] < completed["cursor"] or len(pending["cursor"]) < len(
        completed["cursor"]
    )
    assert set(completed) >= {
        "id",
        "userId",
        "name",
        "state",
        "code",
        "reason",
        "version",
        "createdAt",
        "updatedAt",
        "cursor",
    }

    await bob_socket.wait_for_state(bobs_op, "pending")
    await admin_socket.wait_for_state(op, "completed")
    await admin_socket.wait_for_state(bobs_op, "pending")
    assert {r["id"] for r in bob_socket.records()} == {bobs_op}, "bob saw alice's operation"
    assert len(admin_socket.records(op)) == 2, "the admin got an event twice"


async def test_a_rejection_reaches_the_owner_with_code_and_reason(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    user, op = uid(), uid()
    live = clients()
    await live.connect({"token": token(user)})
    await publisher.publish(
        "create_order_rejected",
        op,
        user=user,
        body={"code": "no_parcels", "reason": "nothing to ship"},
    )
    record = await live.wait_for_state(op, "rejected")
    assert live.received[0][0] == "operation_rejected"
    assert (record["code"], record["reason"]) == ("no_parcels", "nothing to ship")


async def test_guid_formats_match(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    user = uuid.uuid4()
    live = clients()
    await live.connect({"token": token(user.hex)})  # "N" format, as Pacco writes it
    op = uid()
    await publisher.publish("create_order", op, user=str(user).upper())
    await live.wait_for_state(op, "pending")


@pytest.mark.parametrize(
    "kind", ["missing", "garbage", "wrong key", "expired", "alg none", "no exp"]
)
async def test_bad_tokens_are_refused(clients: Callable[[], LiveClient], kind: str) -> None:
    tokens = {
        "missing": None,
        "garbage": "not-a-jwt",
        "wrong key": mint("a-different-secret-0123456789", "u"),
        "expired": mint(SECRET, "u", ttl_seconds=-5),
        "alg none": encode({"sub": "u", "exp": time.time() + 600}, SECRET, "none"),
        "no exp": encode({"sub": "u"}, SECRET),
    }
    live = clients()
    auth: dict[str, Any] = {"token": tokens[kind]} if kind != "missing" else {"token": 42}
    with pytest.raises(socketio.exceptions.ConnectionError):
        await live.connect(auth)
    assert live.connect_error == {"message": "unauthorized", "data": {"code": "unauthorized"}}


async def test_initialize_with_a_good_token(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    user, op = uid(), uid()
    live = clients()
    await live.connect()
    await publisher.publish("create_order", op, user=user)
    await asyncio.sleep(0.3)
    assert live.records() == [], "a client without a token joined a room"
    await live.client.emit("initialize", token(user))
    await live.wait_for(lambda c: bool(c.events("connected")), "connected")
    op2 = uid()
    await publisher.publish("create_order", op2, user=user)
    await live.wait_for_state(op2, "pending")
    assert live.received[0][0] == "connected"


async def test_initialize_with_a_bad_token(clients: Callable[[], LiveClient]) -> None:
    live = clients()
    await live.connect()
    await live.client.emit("initialize", "bad-token")
    await asyncio.wait_for(live.disconnected.wait(), timeout=10)
    assert live.received == [("disconnected", {"code": "unauthorized"})]


async def test_initialize_times_out(
    service: RunningService, clients: Callable[[], LiveClient]
) -> None:
    assert INITIALIZE_TIMEOUT_SECONDS == 10.0
    service.service.hub.initialize_timeout = 0.5
    live = clients()
    await live.connect()
    await asyncio.wait_for(live.disconnected.wait(), timeout=5)
    assert live.received == [("disconnected", {"code": "initialize_timeout"})]


async def test_a_client_is_disconnected_when_its_token_expires(
    clients: Callable[[], LiveClient],
) -> None:
    live = clients()
    expires = int(time.time()) + 3  # what mint() writes for a 3 s lifetime
    await live.connect({"token": mint(SECRET, uid(), ttl_seconds=3)})
    await asyncio.wait_for(live.disconnected.wait(), timeout=10)
    assert expires - 0.1 <= time.time() < expires + 2
    assert live.events("disconnected") == [{"code": "token_expired"}]


async def test_reconnect_with_since_recovers_missed_updates(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    user, first, second = uid(), uid(), uid()
    live = clients()
    await live.connect({"token": token(user)})
    await publisher.publish("create_order", first, user=user)
    seen = await live.wait_for_state(first, "pending")
    await live.close()

    await publisher.publish("add_parcel_to_order", first, user=user, name="add_parcel_to_order")
    await publisher.publish("order_created", first, user=user)
    await publisher.publish("create_order", second, user=user)
    await publisher.publish("create_order", uid(), user=uid())  # someone else's
    await asyncio.sleep(0.5)

    back = clients()
    await back.connect({"token": token(user), "since": seen["cursor"]})
    await back.wait_for(lambda c: bool(c.events("operations_sync")), "operations_sync")
    assert back.received[0][0] == "operations_sync"
    (sync,) = back.events("operations_sync")
    assert sync["recovered"] is True
    assert [(r["id"], r["state"], r["version"]) for r in sync["operations"]] == [
        (first, "completed", 3),
        (second, "pending", 1),
    ]
    third = uid()
    await publisher.publish("create_order", third, user=user)
    live_record = await back.wait_for_state(third, "pending")
    assert live_record["cursor"] > sync["cursor"]


async def test_a_cursor_that_is_too_old_is_not_recovered(
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
    settings: Settings,
    redis_client: aioredis.Redis,
) -> None:
    user = uid()
    live = clients()
    await live.connect({"token": token(user)})
    op = uid()
    await publisher.publish("create_order", op, user=user)
    old = (await live.wait_for_state(op, "pending"))["cursor"]
    for _ in range(3):
        await publisher.publish("create_order", uid(), user=user)
    await live.wait_for(lambda c: len(c.records()) == 4, "four events")
    await redis_client.xtrim(Keys(settings.key_prefix).changes(0), maxlen=1, approximate=False)

    for since in (old, "garbage", "99999999999999-0"):
        again = clients()
        await again.connect({"token": token(user), "since": since})
        await again.wait_for(lambda c: bool(c.events("operations_sync")), "operations_sync")
        (sync,) = again.events("operations_sync")
        assert (sync["recovered"], sync["operations"]) == (False, []), since
        await again.close()


async def test_no_update_is_lost_between_the_sync_and_going_live(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    """A stream of changes keeps flowing while clients reconnect with their last cursor."""
    user = uid()
    ops = [uid() for _ in range(40)]
    steps = ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", "order_approved"]
    first = clients()
    await first.connect({"token": token(user)})
    await publisher.publish("create_order", ops[0], user=user, name="create_order")
    cursor = (await first.wait_for_state(ops[0], "pending"))["cursor"]
    await first.close()

    async def stream() -> None:
        for step in steps:
            for op in ops:
                await publisher.publish(step, op, user=user, name=step)
                await asyncio.sleep(0.001)

    streaming = asyncio.create_task(stream())
    views: list[LiveClient] = []
    while not streaming.done():
        view = clients()
        await view.connect({"token": token(user), "since": cursor})
        views.append(view)
        await asyncio.sleep(0.05)
    await streaming
    for view in views:
        await view.wait_for(
            lambda c: all(any(r["state"] == "completed" for r in c.records(op)) for op in ops),
            "every operation to complete in every view",
        )
        assert view.received[0][0] == "operations_sync"
        assert_monotonic(view.records())
    assert len(views) >= 3


async def test_no_regression_under_shuffled_and_duplicated_deliveries(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    rng = random.Random(11)
    admin = clients()
    await admin.connect({"token": token("ops", "admin")})
    finals: dict[str, str] = {}
    deliveries: list[tuple[str, str, str]] = []
    for _ in range(60):
        op = uid()
        terminal = rng.choice(["order_created", "create_order_rejected"])
        finals[op] = "completed" if terminal == "order_created" else "rejected"
        for message in ("create_order", "add_parcel_to_order", terminal):
            deliveries.append((message, op, uuid.uuid4().hex))
    deliveries += rng.sample(deliveries, 60)
    rng.shuffle(deliveries)
    for message, op, message_id in deliveries:
        await publisher.publish(message, op, user="u", name=message, message_id=message_id)
    for op, state in finals.items():
        await admin.wait_for_state(op, state)
    records = admin.records()
    assert_monotonic(records)
    for op in finals:
        versions = [r["version"] for r in admin.records(op)]
        assert versions == list(range(1, len(versions) + 1)), "a change was pushed twice or lost"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_fan_out_across_processes_over_websocket_without_sticky_sessions(
    settings: Settings, redis_client: aioredis.Redis, publisher: Publisher, token: Token
) -> None:
    """Process A (here) and process B (a separate `operations serve`) share the queue; a client
    on B receives every change, including those A consumed."""
    port = _free_port()
    env = {
        **os.environ,
        "OPERATIONS_AMQP_URL": settings.amqp_url,
        "OPERATIONS_REDIS_URL": settings.redis_url,
        "OPERATIONS_PORT": str(port),
        "OPERATIONS_QUEUE": settings.queue,
        "OPERATIONS_KEY_PREFIX": settings.key_prefix,
        "OPERATIONS_JWT_SECRET": SECRET,
    }
    other = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operations",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with start_service(settings) as here:
            live = LiveClient(f"http://127.0.0.1:{port}")

            async def connected() -> bool:
                try:
                    await live.connect({"token": token("ops", "admin")})
                    return True
                except socketio.exceptions.ConnectionError:
                    return False

            await eventually(connected, "process B to accept sockets", timeout=30)
            ops = [uid() for _ in range(200)]
            for op in ops:
                await publisher.publish("create_order", op, user="u")
            await live.wait_for(lambda c: len(c.records()) == len(ops), "every push on B")
            assert {r["id"] for r in live.records()} == set(ops)
            consumed_here = here.service.metrics.messages.value(kind="command", outcome="applied")
            assert 0 < consumed_here < len(ops), "A did not share the work"
            await live.close()
    finally:
        other.terminate()
        await asyncio.wait_for(other.wait(), timeout=30)


async def test_the_browser_page_and_its_client_are_served(service: RunningService) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=service.url, follow_redirects=True) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "socket.io-4.8.4.min.js" in page.text
        script = await http.get("/live/vendor/socket.io-4.8.4.min.js")
        assert script.status_code == 200 and len(script.content) > 10_000
        assert (await http.get("/live/live.js")).status_code == 200
