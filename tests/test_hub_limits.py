"""One user's sockets must not stall, starve or outnumber the others (issue #23, findings 3 and
10): recoveries run beside the live pushes and are bounded, sockets are capped per user, and a
connection that never brings a valid token is closed at the initialize timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
import socketio

from hub import hub as hub_module
from hub import recovering
from hub.recovery import Sync, changes_since
from operations.errors import SettingsError
from operations.settings import Settings
from operations.store.keys import Keys
from tests.hub_support import Token, assert_goes_live_after, assert_monotonic, live_clients
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, start_service, uid

MAX_VIEWS = 12
"""The views a reconnect test opens at most: fewer than a user's sockets (20 by default)."""


async def fill_stream(redis: aioredis.Redis, settings: Settings, entries: int) -> None:
    """Appends other users' changes to the change stream, as the apply script writes them."""
    stream = Keys(settings.key_prefix).changes(0)
    for start in range(0, entries, 2_000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + 2_000, entries)):
                op, user = f"filler-{n}", f"someone-{n % 50}"
                record = {"id": op, "userId": user, "name": "x", "state": "pending", "version": 1}
                pipe.xadd(
                    stream,
                    {"op": orjson.dumps(record), "id": op, "user": user, "state": "pending"},
                )
            await pipe.execute()


async def test_a_hundred_recoveries_do_not_hold_up_another_users_live_events(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: object,
    publisher: Publisher,
    token: Token,
) -> None:
    """100 sockets of A reconnect with ``since: "0-0"`` over a stream of 20,000 changes while B
    waits for a live change: B gets it at once (it took 10 s and more when each recovery read the
    stream on the pusher), and every one of A's sockets gets a correct sync, then goes live."""
    await fill_stream(redis_client, settings, 20_000)
    a, b = uid(), uid()
    async with (
        start_service(replace(settings, max_sockets_per_user=100)) as running,
        live_clients(running.url) as clients,
    ):
        watcher = clients()
        await watcher.connect({"token": token(b)})
        sockets = [clients() for _ in range(100)]
        await asyncio.gather(*(s.connect({"token": token(a), "since": "0-0"}) for s in sockets))

        published = time.monotonic()
        op = uid()
        await publisher.publish("create_order", op, user=b)
        await watcher.wait_for_state(op, "pending", timeout=30)
        took = time.monotonic() - published
        assert took < 2.0, f"B's live event took {took:.1f} s while A's sockets recovered"

        for s in sockets:
            await s.wait_for(lambda c: bool(c.events("operations_sync")), "A's sync", 60)
        own = uid()
        await publisher.publish("create_order", own, user=a)
        for s in sockets:
            await s.wait_for_state(own, "pending")
            (sync,) = s.events("operations_sync")
            # 20,000 entries to read is past the bound: the client refetches, and goes live.
            assert (sync["recovered"], sync["operations"]) == (False, [])
            assert_goes_live_after(s, sync)
        metrics = running.service.metrics
        assert metrics.recoveries_given_up.value(reason="entries") == 100
        assert metrics.recoveries.value() == 0


@pytest.mark.parametrize("role", ["user", "admin"])
async def test_changes_applied_while_recoveries_run_arrive_once_and_in_order(
    service: RunningService,
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
    role: str,
) -> None:
    """Clients reconnect with their last cursor while the same operations keep changing: each
    gets every version after the sync once, in order, and the last one. An admin's own
    operations reach it through two rooms, and still once."""
    user, ops = uid(), [uid() for _ in range(15)]
    roles = ("admin",) if role == "admin" else ()
    steps = ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", "order_approved"]
    first = clients()
    await first.connect({"token": token(user, *roles)})
    for op in ops:
        await publisher.publish(steps[0], op, user=user, name=steps[0])
    await first.wait_for(lambda c: len(c.records()) == len(ops), "version 1 of every operation")
    cursor = first.records()[-1]["cursor"]
    await first.close()

    async def stream() -> None:
        for step in steps[1:]:
            for op in ops:
                await publisher.publish(step, op, user=user, name=step)
                await asyncio.sleep(0.005)

    streaming = asyncio.create_task(stream())
    views: list[LiveClient] = []
    # Bounded below the sockets a user may hold, however long a loaded machine takes to stream.
    while (not streaming.done() or not views) and len(views) < MAX_VIEWS:
        view = clients()
        await view.connect({"token": token(user, *roles), "since": cursor})
        views.append(view)
        await asyncio.sleep(0.02)
    await streaming
    for view in views:
        await view.wait_for(
            lambda c: all(any(r["version"] == 4 for r in c.records(op)) for op in ops),
            "version 4 of every operation in every view",
        )
        (sync,) = view.events("operations_sync")
        assert sync["recovered"] is True
        assert_goes_live_after(view, sync)
        assert_monotonic(view.records())
        for op in ops:
            seen = [r["version"] for r in view.records(op)]
            assert seen == list(range(seen[0], 5)) and seen[0] >= 2, (op, seen)
    assert len(views) >= 3


async def test_a_recovery_that_holds_too_many_changes_gives_up_and_goes_live(
    service: RunningService,
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the live changes held for a client whose sync loads, the sync says
    ``recovered: false`` from the present position, and live events follow it."""
    monkeypatch.setattr(recovering, "HELD_CHANGES", 3)
    user = uid()
    first = clients()
    await first.connect({"token": token(user)})
    op = uid()
    await publisher.publish("create_order", op, user=user)
    cursor = (await first.wait_for_state(op, "pending"))["cursor"]
    await first.close()

    loading, release = asyncio.Event(), asyncio.Event()

    async def held_load(*args: Any) -> Sync:
        loading.set()
        await release.wait()
        return await changes_since(*args)

    monkeypatch.setattr(hub_module, "changes_since", held_load)
    back = clients()
    await back.connect({"token": token(user), "since": cursor})
    await asyncio.wait_for(loading.wait(), timeout=15)
    meanwhile = [uid() for _ in range(5)]
    for other in meanwhile:
        await publisher.publish("create_order", other, user=user)
    hub = service.service.hub

    async def all_pushed() -> bool:
        return service.service.metrics.pushes.value() >= 6

    await eventually(all_pushed, "the five changes to be pushed")
    assert back.received == []
    release.set()
    await back.wait_for(lambda c: bool(c.events("operations_sync")), "the sync")
    (sync,) = back.events("operations_sync")
    assert (sync["recovered"], sync["operations"]) == (False, [])
    assert hub._position is not None and sync["cursor"] == hub._position
    later = uid()
    await publisher.publish("create_order", later, user=user)
    await back.wait_for_state(later, "pending")
    assert [r["id"] for r in back.records()] == [later]
    assert service.service.metrics.recoveries_given_up.value(reason="held_changes") == 1


async def test_a_recovery_past_its_entries_bound_gives_up(
    service: RunningService,
    clients: Callable[[], LiveClient],
    publisher: Publisher,
    token: Token,
) -> None:
    service.service.hub.recovery_max_entries = 3
    user = uid()
    first = clients()
    await first.connect({"token": token(user)})
    ops = [uid() for _ in range(5)]
    for op in ops:
        await publisher.publish("create_order", op, user=user)
    await first.wait_for(lambda c: len(c.records()) == 5, "five changes")
    cursors = [r["cursor"] for r in first.records()]
    await first.close()

    for since, recovered in ((cursors[1], True), (cursors[0], False)):
        back = clients()
        await back.connect({"token": token(user), "since": since})
        await back.wait_for(lambda c: bool(c.events("operations_sync")), "the sync")
        (sync,) = back.events("operations_sync")
        assert sync["recovered"] is recovered, since
        assert [r["id"] for r in sync["operations"]] == (ops[2:] if recovered else [])
        await back.close()
    assert service.service.metrics.recoveries_given_up.value(reason="entries") == 1


async def test_sockets_are_capped_per_user_and_others_are_unaffected(
    settings: Settings, redis_client: aioredis.Redis, amqp: object, token: Token
) -> None:
    async with (
        start_service(replace(settings, max_sockets_per_user=3)) as running,
        live_clients(running.url) as clients,
    ):
        a, b = uid(), uid()
        held = [clients() for _ in range(3)]
        for client in held:
            await client.connect({"token": token(a)})

        refused = clients()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect({"token": token(a)})
        assert refused.connect_error == {
            "message": "too_many_sockets",
            "data": {"code": "too_many_sockets"},
        }
        pacco = clients()
        await pacco.connect()
        await pacco.client.emit("initialize", token(a))
        await asyncio.wait_for(pacco.disconnected.wait(), timeout=10)
        assert pacco.received == [("disconnected", {"code": "too_many_sockets"})]

        others = [clients() for _ in range(3)]
        for client in others:
            await client.connect({"token": token(b)})
            assert client.client.connected

        await held[0].close()
        metrics = running.service.metrics

        async def freed() -> bool:
            return metrics.sockets.value() == 5  # A's two left and B's three

        await eventually(freed, "the closed socket to be gone")
        again = clients()
        await again.connect({"token": token(a)})
        assert again.client.connected
        refusals = metrics.socket_refusals
        assert refusals.value(reason="too_many_sockets") == 2


async def open_raw_socket(
    session: aiohttp.ClientSession, url: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    )
    opened = await ws.receive_str(timeout=10)
    assert opened.startswith("0{"), opened
    return ws


async def talk_until_closed(ws: aiohttp.ClientWebSocketResponse, limit: float) -> list[str]:
    """Answers pings and records every text frame until the server closes the WebSocket."""
    heard: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            message = await ws.receive(timeout=deadline - time.monotonic())
        except TimeoutError:
            break
        if message.type != aiohttp.WSMsgType.TEXT:
            return heard
        heard.append(message.data)
        if message.data == "2":
            await ws.send_str("3")
    raise AssertionError(f"still open after {limit} s: {heard}")


@pytest.mark.parametrize(
    "says", ["nothing", "a refused token", "no initialize", "a token, then leaves"]
)
async def test_a_connection_without_a_valid_token_is_closed_at_the_timeout(
    service: RunningService, token: Token, says: str
) -> None:
    """A raw engine.io WebSocket that answers pings but is not (or no longer) admitted: it shows
    in the unadmitted gauge, then is closed at the initialize timeout."""
    hub, metrics = service.service.hub, service.service.metrics
    hub.initialize_timeout = 1.0
    async with aiohttp.ClientSession() as session:
        ws = await open_raw_socket(session, service.url)
        if says == "a refused token":
            await ws.send_str('40{"token":"not-a-jwt"}')
            assert (await ws.receive_str(timeout=10)).startswith("44")
        elif says == "no initialize":
            await ws.send_str("40")
            assert (await ws.receive_str(timeout=10)).startswith("40")
        elif says == "a token, then leaves":
            await ws.send_str("40" + orjson.dumps({"token": token(uid())}).decode())
            assert (await ws.receive_str(timeout=10)).startswith("40")
            await ws.send_str("41")  # leaves the namespace, keeps the connection

        async def seen() -> bool:
            return metrics.sockets_unadmitted.value() == 1

        await eventually(seen, "the connection in the unadmitted gauge")
        opened = time.monotonic()
        heard = await talk_until_closed(ws, 10.0)
        assert time.monotonic() - opened < 5.0
        await ws.close()
    if says == "no initialize":
        assert '42["disconnected",{"code":"initialize_timeout"}]' in heard
    assert metrics.sockets_unadmitted.value() == 0
    assert metrics.sockets.value() == 0
    assert metrics.socket_refusals.value(reason="initialize_timeout") == 1


async def test_an_admitted_connection_is_not_closed_at_the_timeout(
    service: RunningService, token: Token
) -> None:
    hub, metrics = service.service.hub, service.service.metrics
    hub.initialize_timeout = 0.5
    async with aiohttp.ClientSession() as session:
        ws = await open_raw_socket(session, service.url)
        await ws.send_str("40" + orjson.dumps({"token": token(uid())}).decode())
        assert (await ws.receive_str(timeout=10)).startswith("40")
        assert metrics.sockets_unadmitted.value() == 0
        with pytest.raises(AssertionError, match="still open"):
            await talk_until_closed(ws, 1.5)
        assert not ws.closed
        await ws.close()


def test_the_bounds_are_settings() -> None:
    defaults = Settings()
    assert (defaults.max_sockets_per_user, defaults.recovery_max_entries) == (20, 10_000)
    read = Settings.from_env(
        {"OPERATIONS_MAX_SOCKETS_PER_USER": "5", "OPERATIONS_RECOVERY_MAX_ENTRIES": "100"}
    )
    assert (read.max_sockets_per_user, read.recovery_max_entries) == (5, 100)
    with pytest.raises(SettingsError, match="OPERATIONS_MAX_SOCKETS_PER_USER"):
        Settings.from_env({"OPERATIONS_MAX_SOCKETS_PER_USER": "0"})
