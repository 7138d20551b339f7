"""Who may join the live push (contract §5): tokens that are refused, the Pacco flow that
connects without a token and brings one in ``initialize`` (and its ten-second limit), and
the disconnect when a token expires."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import socketio

from hub.hub import INITIALIZE_TIMEOUT_SECONDS
from operations.auth.tokens import mint
from tests.conftest import SECRET
from tests.hub_support import Token
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, uid


@pytest.mark.parametrize(
    "kind", ["not a string", "garbage", "wrong key", "expired", "alg none", "no exp"]
)
async def test_bad_tokens_are_refused(clients: Callable[[], LiveClient], kind: str) -> None:
    tokens: dict[str, Any] = {
        "not a string": 42,
        "garbage": "not-a-jwt",
        "wrong key": mint("a-different-secret-0123456789-0123456789", "u"),
        "expired": mint(SECRET, "u", ttl_seconds=-5),
        "alg none": jwt.encode({"sub": "u", "exp": time.time() + 600}, "", algorithm="none"),
        "no exp": jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"),
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


async def test_a_timer_action_is_held_while_it_runs_and_ended_on_stop(
    service: RunningService, clients: Callable[[], LiveClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disconnect a client's timer starts is a task the hub keeps a reference to (a task
    nothing refers to may be collected half-way); stopping the hub cancels it."""
    hub = service.service.hub
    hub.initialize_timeout = 0.05
    emitting = asyncio.Event()

    async def held_emit(*_: Any, **__: Any) -> None:
        emitting.set()
        await asyncio.Event().wait()  # never set: the action stays in its emit

    monkeypatch.setattr(hub.server, "emit", held_emit)
    live = clients()
    await live.connect()
    await asyncio.wait_for(emitting.wait(), timeout=10)
    gc.collect()
    assert hub.actions == 1

    async def running() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "hub_initialize_expired"]

    (task,) = await eventually(running, "the timer's action among the loop's tasks")
    await hub.stop()
    assert task.cancelled() and hub.actions == 0


@pytest.mark.slow
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
