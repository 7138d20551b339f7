"""Live push over Socket.IO with a real client against the running service (contract §5)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import socketio

from hub import hub as hub_module
from hub.hub import INITIALIZE_TIMEOUT_SECONDS
from hub.recovery import Sync, is_ahead, parse_cursor
from operations.feed import ChangeFeed, FeedEntry, Listener
from operations.service import Service
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
async def clients(service: RunningService) -> AsyncIterator[Callable[..., LiveClient]]:
    """Makes clients of the service (or of ``url``), closed after the test."""
    made: list[LiveClient] = []

    def make(url: str | None = None) -> LiveClient:
        client = LiveClient(url or service.url)
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
    "kind", ["not a string", "garbage", "wrong key", "expired", "alg none", "no exp"]
)
async def test_bad_tokens_are_refused(clients: Callable[[], LiveClient], kind: str) -> None:
    tokens: dict[str, Any] = {
        "not a string": 42,
        "garbage": "not-a-jwt",
        "wrong key": mint("a-different-secret-0123456789", "u"),
        "expired": mint(SECRET, "u", ttl_seconds=-5),
        "alg none": encode({"sub": "u", "exp": time.time() + 600}, SECRET, "none"),
        "no exp": encode({"sub": "u"}, SECRET),
    }
    live = clients()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await live.connect({"token": tokens[kind]})
    assert live.connect_error == {"message": "unauthorized", "data": {"code": "unauthorized"}}


@pytest.mark.parametrize(
    ("auth", "initialize"),
    [(None, "string"), ({}, "object"), ({"token": None}, "string")],
    ids=["no auth", "empty auth", "null token"],
)
async def test_a_client_without_a_token_joins_after_initialize(
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
    auth: dict[str, Any] | None,
    initialize: str,
) -> None:
    """The Pacco flow: accepted without a token, in no room until ``initialize`` brings one."""
    user, before, after = uid(), uid(), uid()
    live, admin = clients(), clients()
    await admin.connect({"token": token("ops", "admin")})
    await live.connect(auth)
    assert live.client.connected and live.connect_error is None
    await publisher.publish("create_order", before, user=user)
    await admin.wait_for_state(before, "pending")
    jwt = token(user)
    await live.client.emit("initialize", jwt if initialize == "string" else {"token": jwt})
    await live.wait_for(lambda c: bool(c.events("connected")), "connected")
    await publisher.publish("create_order", after, user=user)
    await live.wait_for_state(after, "pending")
    # The first change was pushed before the second: had the client been in a room, it came first.
    assert live.received == [("connected", {"userId": user}), *live.received[1:]]
    assert [r["id"] for r in live.records()] == [after], "a client without a token joined a room"


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


async def test_initialize_waits_ten_seconds(
    service: RunningService, clients: Callable[[], LiveClient]
) -> None:
    """The real default: still connected well into the ten seconds, gone soon after them."""
    assert service.service.hub.initialize_timeout == INITIALIZE_TIMEOUT_SECONDS == 10.0
    live = clients()
    gone_at: list[float] = []

    async def gone(*_: Any) -> None:
        gone_at.append(time.monotonic())
        live.received.append(("<disconnect>", None))
        live.disconnected.set()

    live.client.on("disconnect", gone)
    opened = time.monotonic()
    await live.connect()
    await asyncio.sleep(opened + 8.5 - time.monotonic())
    assert live.client.connected and live.received == [], "gone before ten seconds"
    await asyncio.wait_for(live.disconnected.wait(), timeout=opened + 12.0 - time.monotonic())
    assert gone_at[0] - opened >= INITIALIZE_TIMEOUT_SECONDS - 0.05
    assert live.received == [
        ("disconnected", {"code": "initialize_timeout"}),
        ("<disconnect>", None),
    ]


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


@contextlib.asynccontextmanager
async def other_process(settings: Settings) -> AsyncIterator[str]:
    """A separate `operations serve` on the same queue and keys; yields its URL once it is ready."""
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
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, "process B to be ready", timeout=30)
        yield url
    finally:
        other.terminate()
        await asyncio.wait_for(other.wait(), timeout=30)


async def test_fan_out_across_processes_over_websocket_without_sticky_sessions(
    settings: Settings, redis_client: aioredis.Redis, publisher: Publisher, token: Token
) -> None:
    """Process A (here) and process B (a separate `operations serve`) share the queue; a client
    on B receives every change, including those A consumed."""
    async with other_process(settings) as url, start_service(settings) as here:
        live = LiveClient(url)

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


async def test_the_browser_page_and_its_client_are_served(service: RunningService) -> None:
    async with httpx.AsyncClient(base_url=service.url, follow_redirects=True) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "socket.io-4.8.4.min.js" in page.text
        script = await http.get("/live/vendor/socket.io-4.8.4.min.js")
        assert script.status_code == 200 and len(script.content) > 10_000
        assert (await http.get("/live/live.js")).status_code == 200


# -- going live after a sync, and moving between processes -----------------------------------

# Each step gives an operation its next version: three pending steps with new names, then done.
STEPS = ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", "order_approved"]


async def publish_version(publisher: Publisher, ops: list[str], user: str, version: int) -> None:
    step = STEPS[version - 1]
    for op in ops:
        await publisher.publish(step, op, user=user, name=step)


async def stored(service: Service, ops: list[str], version: int) -> None:
    async def every() -> bool:
        for op in ops:
            record = await service.store.get(op)
            if record is None or record.version < version:
                return False
        return True

    await eventually(every, f"every operation at version {version} in the store")


def versions(client: LiveClient, ops: list[str]) -> dict[str, list[int]]:
    return {op: [r["version"] for r in client.records(op)] for op in ops}


def reached(client: LiveClient, ops: list[str], version: int) -> Callable[[LiveClient], bool]:
    return lambda c: all(version in v for v in versions(c, ops).values())


def assert_goes_live_after(client: LiveClient, sync: dict[str, Any]) -> None:
    """Every live event came after the sync, from a later position of the feed."""
    assert client.received[0] == ("operations_sync", sync)
    synced = parse_cursor(sync["cursor"], sync["cursor"].count(",") + 1)
    assert synced is not None
    for event, record in client.received[1:]:
        assert event != "operations_sync", "a second sync"
        position = parse_cursor(record["cursor"], len(synced))
        assert position is not None and is_ahead(position, synced), (record, sync)
        assert not is_ahead(synced, position), (record, sync)


class FeedWatch:
    """The changes a feed hands to its listeners, seen after the hub's listener has them."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.entries: list[FeedEntry] = []
        feed.subscribe(self.entries.extend)

    async def has(self, ops: list[str], version: int) -> bool:
        seen = {
            entry.operation_id
            for entry in self.entries
            if orjson.loads(entry.snapshot)["version"] == version
        }
        return seen >= set(ops)


@pytest.mark.parametrize("pause", ["before the read", "after the read"])
async def test_changes_applied_while_a_sync_loads_follow_it_live(
    service: RunningService,
    clients: Callable[..., LiveClient],
    publisher: Publisher,
    token: Token,
    monkeypatch: pytest.MonkeyPatch,
    pause: str,
) -> None:
    """The hub is held inside loading a reconnecting client's sync (before or after it reads the
    streams) while the same operations change again; the client then sees every version once,
    in order: the sync, then the changes applied meanwhile, live."""
    user, ops = uid(), [uid() for _ in range(5)]
    first = clients()
    await first.connect({"token": token(user)})
    await publish_version(publisher, ops, user, 1)
    await first.wait_for(reached(first, ops, 1), "version 1 of every operation")
    cursor = first.records()[-1]["cursor"]
    await first.close()
    watch = FeedWatch(service.service.feed)
    await publish_version(publisher, ops, user, 2)
    await eventually(lambda: watch.has(ops, 2), "version 2 to reach the hub")

    loading, release = asyncio.Event(), asyncio.Event()
    load = hub_module.changes_since

    async def held_load(*args: Any) -> Sync:
        sync = await load(*args) if pause == "after the read" else None
        loading.set()
        await release.wait()
        return sync or await load(*args)

    monkeypatch.setattr(hub_module, "changes_since", held_load)
    back = clients()
    await back.connect({"token": token(user), "since": cursor})
    await asyncio.wait_for(loading.wait(), timeout=15)
    await publish_version(publisher, ops, user, 3)
    await eventually(lambda: watch.has(ops, 3), "version 3 to reach the hub")
    assert back.received == [], "an event before the sync"
    release.set()
    await back.wait_for(reached(back, ops, 3), "version 3 of every operation")
    await publish_version(publisher, ops, user, 4)
    await back.wait_for(reached(back, ops, 4), "version 4 of every operation")

    (sync,) = back.events("operations_sync")
    assert sync["recovered"] is True
    assert sorted((r["id"], r["version"]) for r in sync["operations"]) == sorted(
        (op, 2) for op in ops
    )
    assert versions(back, ops) == {op: [2, 3, 4] for op in ops}
    assert_goes_live_after(back, sync)


class HeldBack:
    """Stands between a feed and one listener; while closed, it keeps the changes back."""

    def __init__(self) -> None:
        self.closed = False
        self.held: list[list[FeedEntry]] = []
        self.listener: Listener | None = None

    def around(self, listener: Listener) -> Listener:
        self.listener = listener
        return self.hand_on

    def hand_on(self, entries: list[FeedEntry]) -> None:
        assert self.listener is not None
        if self.closed:
            self.held.append(entries)
        else:
            self.listener(entries)

    async def holds(self, ops: list[str], version: int) -> bool:
        seen = {
            entry.operation_id
            for entries in self.held
            for entry in entries
            if orjson.loads(entry.snapshot)["version"] == version
        }
        return seen >= set(ops)

    def open(self) -> None:
        """Hands on everything held as one batch, as one read of a feed that fell behind."""
        self.closed = False
        held, self.held = self.held, []
        self.hand_on([entry for entries in held for entry in entries])


async def test_a_cursor_ahead_of_the_process_waits_until_it_catches_up(
    settings: Settings,
    service: RunningService,
    clients: Callable[..., LiveClient],
    publisher: Publisher,
    token: Token,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client comes back on process B with a cursor from process A while B's hub is behind
    it: B holds the client back until it has caught up, then syncs everything since the cursor."""
    gate = HeldBack()
    subscribe = ChangeFeed.subscribe
    monkeypatch.setattr(
        ChangeFeed, "subscribe", lambda feed, listener: subscribe(feed, gate.around(listener))
    )
    monkeypatch.setattr(hub_module, "CATCH_UP_SECONDS", 60.0)  # outlasts a slow machine
    async with start_service(settings) as other:
        monkeypatch.setattr(ChangeFeed, "subscribe", subscribe)
        gate.closed = True
        user, ops = uid(), [uid() for _ in range(5)]
        on_a = clients()
        await on_a.connect({"token": token(user)})
        await publish_version(publisher, ops, user, 1)
        await on_a.wait_for(reached(on_a, ops, 1), "version 1 on process A")
        cursor = on_a.records()[-1]["cursor"]
        await on_a.close()
        await publish_version(publisher, ops, user, 2)
        await stored(service.service, ops, 2)

        on_b = clients(other.url)
        await on_b.connect({"token": token(user), "since": cursor})

        async def waiting() -> bool:
            return len(other.service.hub._waiting) == 1

        await eventually(waiting, "process B to hold the client back")
        await publish_version(publisher, ops, user, 3)
        await eventually(lambda: gate.holds(ops, 3), "version 3 to be held back from B's hub")
        assert on_b.received == [], "an event before B caught up"
        gate.open()
        await on_b.wait_for(lambda c: bool(c.events("operations_sync")), "the sync")
        await publish_version(publisher, ops, user, 4)
        await on_b.wait_for(reached(on_b, ops, 4), "version 4 live on process B")
        await on_b.close()

    (sync,) = on_b.events("operations_sync")
    assert sync["recovered"] is True
    assert sorted((r["id"], r["version"]) for r in sync["operations"]) == sorted(
        (op, 3) for op in ops
    )
    assert versions(on_b, ops) == {op: [3, 4] for op in ops}
    assert_goes_live_after(on_b, sync)


async def test_a_client_comes_back_on_another_process_without_sticky_sessions(
    settings: Settings,
    service: RunningService,
    clients: Callable[..., LiveClient],
    publisher: Publisher,
    token: Token,
) -> None:
    """Over WebSocket, a client of process A that reconnects to process B with its last cursor
    gets exactly what it missed in the sync, then B's live events."""
    user, ops = uid(), [uid() for _ in range(5)]
    async with other_process(settings) as url_b:
        on_a, watching_b = clients(), clients(url_b)
        await on_a.connect({"token": token(user)})
        await watching_b.connect({"token": token(user)})
        assert on_a.client.transport() == "websocket"
        await publish_version(publisher, ops, user, 1)
        await on_a.wait_for(reached(on_a, ops, 1), "version 1 on process A")
        cursor = on_a.records()[-1]["cursor"]
        await on_a.close()

        await publish_version(publisher, ops, user, 2)
        await publisher.publish("create_order", uid(), user=uid())  # someone else's
        # Once B has pushed version 2 to another client, a joining client's sync includes it.
        await watching_b.wait_for(reached(watching_b, ops, 2), "version 2 pushed by process B")

        on_b = clients(url_b)
        await on_b.connect({"token": token(user), "since": cursor})
        assert on_b.client.transport() == "websocket"
        await on_b.wait_for(lambda c: bool(c.events("operations_sync")), "the sync on B")
        await publish_version(publisher, ops, user, 3)
        await on_b.wait_for(reached(on_b, ops, 3), "version 3 live on process B")

    (sync,) = on_b.events("operations_sync")
    assert sync["recovered"] is True
    assert sorted((r["id"], r["version"]) for r in sync["operations"]) == sorted(
        (op, 2) for op in ops
    )
    assert versions(on_b, ops) == {op: [2, 3] for op in ops}
    assert {r["id"] for r in on_b.records()} == set(ops)
    assert_goes_live_after(on_b, sync)


async def test_long_polling_works_but_its_session_stays_on_one_process(
    settings: Settings,
    service: RunningService,
    clients: Callable[..., LiveClient],
    publisher: Publisher,
    token: Token,
) -> None:
    """A long-polling client gets its events from the process it polls; that process alone
    knows the session, so another process refuses the session's requests (400)."""
    user, op = uid(), uid()
    polling = clients()
    await polling.client.connect(
        service.url,
        auth={"token": token(user)},
        transports=["polling"],
        socketio_path="socket.io",
        wait_timeout=10,
    )
    assert polling.client.transport() == "polling"
    await publisher.publish("create_order", op, user=user)
    await polling.wait_for_state(op, "pending")
    # The server ends the Engine.IO session: a GET still pending when the client closes is only
    # answered at the ping timeout (45 s), and the service's shutdown would wait for it.
    await service.service.hub.server.eio.disconnect(polling.client.eio.sid)
    await asyncio.wait_for(polling.disconnected.wait(), timeout=15)

    async with other_process(settings) as url_b, httpx.AsyncClient(timeout=10) as http:
        handshake = await http.get(
            f"{service.url}/socket.io/", params={"EIO": "4", "transport": "polling"}
        )
        assert handshake.status_code == 200 and handshake.text.startswith("0{")
        session = {
            "EIO": "4",
            "transport": "polling",
            "sid": orjson.loads(handshake.text[1:])["sid"],
        }
        packet = "40" + orjson.dumps({"token": token(user)}).decode()

        elsewhere = await http.post(f"{url_b}/socket.io/", params=session, content=packet)
        assert elsewhere.status_code == 400 and "Invalid session" in elsewhere.text
        assert (await http.get(f"{url_b}/socket.io/", params=session)).status_code == 400

        here = await http.post(f"{service.url}/socket.io/", params=session, content=packet)
        assert (here.status_code, here.text) == (200, "OK")
        answer = await http.get(f"{service.url}/socket.io/", params=session)
        assert answer.status_code == 200 and answer.text.startswith('40{"sid":')
