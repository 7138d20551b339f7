"""Several service processes and the Socket.IO transports: fan-out across processes, a
client back on another process (with a cursor ahead of it, or without sticky sessions),
long-polling's one-process sessions, and the browser client served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import socketio

from hub import hub as hub_module
from hub import partings
from operations.feed import ChangeFeed, FeedEntry, Listener
from operations.service import Service
from operations.settings import Settings
from tests.conftest import SECRET
from tests.hub_support import Token, assert_goes_live_after, publish_version, reached, versions
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, free_port, start_service, uid


@contextlib.asynccontextmanager
async def other_process(settings: Settings) -> AsyncIterator[str]:
    """A separate `operations serve` on the same queue and keys; yields its URL once it is ready."""
    port = free_port()
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
        assert page.status_code == 200 and '<script type="module" src="live.js">' in page.text
        module = await http.get("/live/live.js")
        assert module.status_code == 200 and 'from "/client/operations.js"' in module.text
        script = await http.get("/client/socket.io.esm.min.js")
        assert script.status_code == 200 and len(script.content) > 10_000


async def stored(service: Service, ops: list[str], version: int) -> None:
    async def every() -> bool:
        for op in ops:
            record = await service.store.get(op)
            if record is None or record.version < version:
                return False
        return True

    await eventually(every, f"every operation at version {version} in the store")


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
    await partings.disconnect(service.service.hub.server.eio, polling.client.eio.sid)
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
