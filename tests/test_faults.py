"""The fault suite (``pytest -m faults``): while a publisher streams plain operations and saga
traffic, RabbitMQ restarts, Redis restarts (with its append-only file), one of two service
processes is killed with SIGKILL in the middle of its batches and started again, and Socket.IO
clients drop and reconnect. Afterwards every operation must end in the state its messages
decide, no client may have seen a state go backwards, clients that reconnected with their cursor
must hold every final state, and the dead-letter queue must hold exactly the malformed messages.

Everything runs on loopback and is bounded: a fixed number of messages, each wait with a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import socketio
from redis.exceptions import RedisError

from operations.auth.tokens import mint
from operations.pacco.demo import DemoServices, FailurePlan
from operations.settings import Settings
from operations.store.keys import Keys
from tests.conftest import SECRET
from tests.support import SteadyPublisher, as_text, eventually, free_port

ROOT = Path(__file__).resolve().parent.parent
PLAIN_OPERATIONS = 300
ORDERS = 24
MALFORMED_EVERY = 20


class ServiceProcess:
    """``operations serve`` as its own process, which the suite may SIGKILL and start again."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "OPERATIONS_AMQP_URL": settings.amqp_url,
            "OPERATIONS_REDIS_URL": settings.redis_url,
            "OPERATIONS_PORT": str(self.port),
            "OPERATIONS_QUEUE": settings.queue,
            "OPERATIONS_KEY_PREFIX": settings.key_prefix,
            "OPERATIONS_JWT_SECRET": SECRET,
            "OPERATIONS_LOG_LEVEL": "WARNING",
            "OPERATIONS_SAGA_RETRY_DELAY_MS": "300",
            "OPERATIONS_SAGA_EARLY_RETRIES": "20",
            # The suite counts the dead letters on the dead-letter queue itself.
            "OPERATIONS_DEAD_LETTER_KEEP": "false",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "operations",
            "serve",
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with httpx.AsyncClient() as http:

            async def ready() -> bool:
                try:
                    return (await http.get(f"{self.url}/ready", timeout=2)).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, f"{self.url} to be ready", timeout=60, every=0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@dataclass
class Watcher:
    """An admin's Socket.IO client that reconnects with its last cursor, wherever it can."""

    name: str
    urls: list[str]
    seen: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cursor: str | None = None
    reconnects: int = 0
    client: socketio.AsyncClient | None = None
    # The test drops this client while a background loop keeps every watcher connected: one
    # lock, so that the two never open a second client each (which would record each push twice).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def connect(self, url: str) -> None:
        client = socketio.AsyncClient(reconnection=False)
        for event in ("operation_pending", "operation_completed", "operation_rejected"):
            client.on(event, self._record)
        client.on("operations_sync", self._sync)
        auth: dict[str, Any] = {"token": mint(SECRET, f"{self.name}-admin", ("admin",), 3_600)}
        if self.cursor is not None:
            auth["since"] = self.cursor
        try:
            await client.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
        except socketio.exceptions.ConnectionError:
            await _close(client)
            raise
        self.client = client

    async def _record(self, record: dict[str, Any]) -> None:
        self.seen.setdefault(record["id"], []).append(record)
        self.cursor = record["cursor"]

    async def _sync(self, sync: dict[str, Any]) -> None:
        assert sync["recovered"], f"{self.name}: the cursor was too old to recover from"
        for record in sync["operations"]:
            self.seen.setdefault(record["id"], []).append(record)
        self.cursor = sync["cursor"]

    async def drop_and_reconnect(self) -> None:
        async with self.lock:
            if self.client is not None and self.client.connected:
                await self.client.disconnect()
            await self._connect_anywhere()
            self.reconnects += 1

    async def ensure_connected(self) -> None:
        async with self.lock:
            await self._connect_anywhere()

    async def _connect_anywhere(self) -> None:
        if self.client is not None and self.client.connected:
            return
        if self.client is not None:
            await _close(self.client)
        for _ in range(100):
            for url in self.urls:
                try:
                    await self.connect(url)
                    return
                except socketio.exceptions.ConnectionError:
                    await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} could not reconnect")

    def final(self, op: str) -> dict[str, Any] | None:
        records = self.seen.get(op)
        return records[-1] if records else None

    def assert_never_regressed(self) -> None:
        for op, records in self.seen.items():
            versions = [r["version"] for r in records]
            assert versions == sorted(set(versions)), (
                f"{self.name} saw {op} go back or twice: {versions}"
            )
            assert all(r["state"] == "pending" for r in records[:-1]), (self.name, records)


async def _close(client: socketio.AsyncClient) -> None:
    if client.connected:
        await client.disconnect()
    session = getattr(client.eio, "http", None)
    if session is not None and not session.closed:
        await session.close()


@dataclass
class Plan:
    """Every plain operation's messages (on the customers exchange, which no simulated service
    answers), in the order they are published, with the final state they decide; duplicates
    reuse message ids; some rejections carry a malformed body."""

    messages: list[tuple[str, str, str, bytes]]  # (routing key, operation, message id, body)
    finals: dict[str, str]
    malformed: set[str]

    @classmethod
    def make(cls, rng: random.Random) -> Plan:
        messages: list[tuple[str, str, str, bytes]] = []
        finals: dict[str, str] = {}
        malformed: set[str] = set()
        for index in range(PLAIN_OPERATIONS):
            op = str(uuid.uuid4())
            command = ("change_customer_state", op, uuid.uuid4().hex, b"{}")
            if index % MALFORMED_EVERY == 0:
                terminal = ("change_customer_state_rejected", op, uuid.uuid4().hex, b"<not json>")
                malformed.add(terminal[2])
                finals[op] = "rejected"
            elif rng.random() < 0.5:
                terminal = ("customer_state_changed", op, uuid.uuid4().hex, b"{}")
                finals[op] = "completed"
            else:
                body = b'{"code":"no_stock","reason":"out of stock"}'
                terminal = ("change_customer_state_rejected", op, uuid.uuid4().hex, body)
                finals[op] = "rejected"
            messages += [command, terminal]
            if rng.random() < 0.2 and terminal[2] not in malformed:
                messages.append(rng.choice([command, terminal]))  # a duplicate delivery
        return cls(messages, finals, malformed)


async def publish_all(url: str, plan: Plan, pace: float) -> int:
    """Publishes each message until the broker confirms it, across broker restarts."""
    publisher = SteadyPublisher(
        url,
        exchange="customers",
        context=lambda routing_key: bytearray(
            b'{"Name":"%s","User":{"Id":"fault-user"}}' % routing_key.encode()
        ),
    )
    await publisher.run(plan.messages, pace)
    return publisher.confirmed


async def place_orders(urls: list[str], count: int) -> list[str]:
    """POST /orders, alternating between processes and retrying whichever is down."""
    token = mint(SECRET, "fault-customer", ttl_seconds=3_600)
    operations: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for index in range(count):
            for attempt in range(200):
                url = urls[(index + attempt) % len(urls)]
                try:
                    response = await http.post(
                        f"{url}/orders",
                        json={"customerId": "c", "parcelIds": [f"p{index}a", f"p{index}b"]},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if response.status_code == 202:
                        operations.append(response.json()["operationId"])
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("no process accepted an order for 40 s")
            await asyncio.sleep(0.15)
    return operations


def services_script(command: str) -> asyncio.Future[int]:
    async def run() -> int:
        process = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "services.sh"),
            command,
            env=dict(os.environ),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(process.wait(), timeout=180)

    return asyncio.ensure_future(run())


@pytest.mark.faults
@pytest.mark.timeout(600)
async def test_nothing_is_lost_or_regressed_under_faults(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any
) -> None:
    assert os.environ.get("OPERATIONS_RUN_DIR"), "the fault suite restarts the suite's servers"
    rng = random.Random(2026)
    plan = Plan.make(rng)
    first, second = ServiceProcess(settings), ServiceProcess(settings)
    await first.start()
    await second.start()
    urls = [first.url, second.url]
    watchers = [
        Watcher("on-first", [first.url, second.url]),
        Watcher("on-second", [second.url, first.url]),
        Watcher("dropper", [first.url, second.url]),
    ]
    for watcher in watchers:
        await watcher.ensure_connected()
    failures = FailurePlan({"reserve_resource": 0.3})
    try:
        async with DemoServices(settings.amqp_url, latency_ms=20, failures=failures, seed=7):
            publishing = asyncio.ensure_future(publish_all(settings.amqp_url, plan, pace=0.01))
            ordering = asyncio.ensure_future(place_orders(urls, ORDERS))

            async def keep_watching() -> None:
                while not (publishing.done() and ordering.done()):
                    for watcher in watchers:
                        await watcher.ensure_connected()
                    await asyncio.sleep(0.2)

            watching = asyncio.ensure_future(keep_watching())

            def pushes() -> int:
                return sum(len(seen) for watcher in watchers for seen in watcher.seen.values())

            async def traffic_flows(more: int = 30) -> None:
                """Between two faults: until the watchers have been pushed ``more`` changes
                (or all the traffic is sent)."""
                mark = pushes()

                async def flowed() -> bool:
                    return pushes() >= mark + more or (publishing.done() and ordering.done())

                await eventually(flowed, "changes to be pushed between faults", timeout=120)

            await traffic_flows()
            assert await services_script("restart-rabbitmq") == 0
            await watchers[2].drop_and_reconnect()
            await traffic_flows()
            first.kill()  # SIGKILL, in the middle of its batches
            await traffic_flows()
            await first.start()
            await watchers[2].drop_and_reconnect()
            await traffic_flows()
            assert await services_script("restart-redis") == 0
            await watchers[2].drop_and_reconnect()
            published = await asyncio.wait_for(publishing, timeout=300)
            orders = await asyncio.wait_for(ordering, timeout=300)
            await watching
            for watcher in watchers:
                await watcher.ensure_connected()

            keys = Keys(settings.key_prefix)

            async def settled() -> bool:
                try:
                    async with redis_client.pipeline(transaction=False) as pipe:
                        for op in [*plan.finals, *orders]:
                            pipe.hget(keys.record(op), "s")
                        states = await pipe.execute()
                except RedisError:  # the connection from before Redis restarted
                    return False
                return all(state in (b"completed", b"rejected") for state in states)

            await eventually(settled, "every operation to finish", timeout=180, every=0.5)

        states: dict[str, str] = {}
        for op in [*plan.finals, *orders]:
            state = await redis_client.hget(keys.record(op), "s")
            states[op] = as_text(state) if state else "missing"

        async def pushed() -> bool:  # the last pushes may still be in flight
            return all(
                (record := watcher.final(op)) is not None and record["state"] == state
                for watcher in watchers
                for op, state in states.items()
            )

        with contextlib.suppress(AssertionError):  # what is missing is named below
            await eventually(pushed, "every final state on every watcher", timeout=30)
        lost = [op for op, final in plan.finals.items() if states[op] != final]
        sagas_unfinished = [op for op in orders if states[op] not in ("completed", "rejected")]
        for watcher in watchers:
            watcher.assert_never_regressed()
            for op in [*plan.finals, *orders]:
                record = watcher.final(op)
                assert record is not None and record["state"] == states[op], (watcher.name, op)

        async with amqp.channel() as channel:
            dlq = await channel.declare_queue(settings.dead_letter_queue, durable=True)
            letters = set()
            while (message := await dlq.get(no_ack=True, fail=False)) is not None:
                letters.add(message.message_id)
        applied = await redis_client.xlen(keys.changes(0))
        duplicates = len(plan.messages) - len({m[2] for m in plan.messages})
        print(
            f"\nfault suite: published {published} plain messages and {len(orders)} orders; "
            f"applied {applied} changes; duplicates published {duplicates}; "
            f"dead-lettered {len(letters)}; lost {len(lost) + len(sagas_unfinished)}; "
            f"reconnects by the dropper {watchers[2].reconnects}"
        )
        assert lost == [] and sagas_unfinished == []
        assert letters == plan.malformed
    finally:
        for watcher in watchers:
            if watcher.client is not None:
                await _close(watcher.client)
        await first.stop()
        await second.stop()
        async with amqp.channel() as channel:
            for name in ("demo.orders", "demo.vehicles", "demo.availability"):
                await channel.queue_delete(name)
