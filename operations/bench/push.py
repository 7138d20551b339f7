"""The push figures, against the service run as its own process (``operations serve``): draining
N messages until one Socket.IO client has every push, latency from publish to client at fixed
offered loads, and the memory an idle connected client costs."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import socketio
from aio_pika.abc import AbstractRobustConnection

from operations.auth.tokens import mint
from operations.bench import traffic
from operations.bench.drain import Figure
from operations.bench.probe import Arrivals, Probe
from operations.settings import Settings
from operations.store.keys import Keys

_PR_SET_PDEATHSIG = 1
PUSH_EVENTS = ("operation_pending", "operation_completed", "operation_rejected")


@dataclass
class ServiceProcess:
    process: asyncio.subprocess.Process
    url: str

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS line")


@contextlib.asynccontextmanager
async def service_process(
    settings: Settings, port: int, profile: str | None = None, stop_seconds: float = 30.0
) -> AsyncIterator[ServiceProcess]:
    """With ``profile``, the service runs under cProfile, which writes its statistics to that
    file when the service stops (on SIGINT, so that the profiler's ``finally`` runs). A service
    still stopping after ``stop_seconds`` is killed."""
    env = {
        **os.environ,
        "OPERATIONS_AMQP_URL": settings.amqp_url,
        "OPERATIONS_REDIS_URL": settings.redis_url,
        "OPERATIONS_PORT": str(port),
        "OPERATIONS_QUEUE": settings.queue,
        "OPERATIONS_KEY_PREFIX": settings.key_prefix,
        "OPERATIONS_REDIS_CLUSTER": "false",
        "OPERATIONS_REDIS_SHARDS": "1",
        "OPERATIONS_JWT_SECRET": settings.signing_secret(),
        "OPERATIONS_JWT_JWKS_URL": "",
        "OPERATIONS_PREFETCH": str(settings.prefetch),
        "OPERATIONS_LOG_LEVEL": "WARNING",
        "OPERATIONS_OPERATION_TTL_SECONDS": "900",
        "OPERATIONS_SAGAS": "false",
        "OPERATIONS_AMQP_BULK_FRAMES": "true" if settings.amqp_bulk_frames else "false",
    }
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *profiler,
        "-m",
        "operations",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                try:
                    async with http.get(f"{url}/ready") as response:
                        if response.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("the service process did not become ready")
                await asyncio.sleep(0.05)
        yield ServiceProcess(process, url)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT if profile else signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=stop_seconds)
            except TimeoutError:
                print(f"the service process did not stop within {stop_seconds:g} s: killed")
                process.kill()
                await process.wait()


def _die_with_parent() -> None:
    """In the child before it runs: ask Linux for a SIGTERM when the bench exits, however it
    exits, so that a bench killed midway leaves no service process behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class PushListener(Arrivals):
    """A python-socketio client that notes when each operation's first push arrives."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.client = socketio.AsyncClient(reconnection=False)
        for event in PUSH_EVENTS:
            self.client.on(event, self._push)
        self.client.on("operations_sync", self._sync)

    async def _push(self, record: dict[str, Any]) -> None:
        self.pushed(record)

    async def _sync(self, sync: dict[str, Any]) -> None:
        self.synced(sync["operations"])

    async def connect(self, token: str, since: str | None = None) -> None:
        auth: dict[str, Any] = {"token": token}
        if since is not None:
            auth["since"] = since
        await self.client.connect(self.url, auth=auth, transports=["websocket"], wait_timeout=30)

    async def close(self) -> None:
        await self.client.disconnect()


async def drain_to_client(
    settings: Settings,
    connection: AbstractRobustConnection,
    redis: aioredis.Redis,
    count: int,
    port: int,
    publish: bool = True,
    lean: bool = True,
) -> tuple[Figure, int]:
    """N pre-published messages through a service process until one client has every push.

    The client connects with ``since`` set to the stream's position before the run, so any push
    it is too late for reaches it in its ``operations_sync``; the figure says how many did. The
    client is the lean :class:`Probe`, or with ``lean=False`` python-socketio's own client."""
    stream = Keys(settings.key_prefix).changes(0)  # the bench runs with one shard
    newest: Any = await redis.xrevrange(stream, count=1)
    since = newest[0][0].decode() if newest else "0-0"
    if publish:
        await traffic.publish(connection, count)
    async with service_process(settings, port) as service:
        counter: PushListener | Probe = Probe(service.url) if lean else PushListener(service.url)
        counter.expected = count
        await counter.connect(
            mint(settings.signing_secret(), traffic.ADMIN_USER, ("admin",)), since
        )
        await asyncio.wait_for(counter.complete.wait(), timeout=600)
        finished = time.time()
        await counter.close()
    first: Any = await redis.xrange(stream, min=f"({since}", count=1)
    started = int(first[0][0].decode().split("-")[0]) / 1000
    name = "service" if lean else "service (sio client)"
    return Figure(name, count, finished - started), counter.via_sync


async def latency(
    service: ServiceProcess,
    connection: AbstractRobustConnection,
    secret: str,
    rate: int,
    seconds: float,
) -> tuple[float, float]:
    """p50 and p99 (ms) from publish to the client's receipt, at ``rate`` messages a second."""
    counter = PushListener(service.url)
    await counter.connect(mint(secret, traffic.ADMIN_USER, ("admin",)))
    sent: dict[str, float] = {}
    total = int(rate * seconds)
    warm_up = min(total // 10, rate // 2)
    async with connection.channel(publisher_confirms=False) as channel:
        targets = await traffic.exchanges(channel)
        started = time.perf_counter()
        wall_offset = time.time() - started
        for index in range(total):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            operation_id = str(uuid.uuid4())
            exchange, name, body = traffic.message(index, operation_id)
            sent[operation_id] = time.perf_counter() + wall_offset
            await targets[exchange].publish(body, routing_key=name)
    counter.expected = total
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.complete.wait(), timeout=30)
    await counter.close()
    ordered = list(sent)[warm_up:]
    missing = [op for op in ordered if op not in counter.arrived]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(ordered)} pushes never arrived")
    samples = sorted((counter.arrived[op] - sent[op]) * 1000 for op in ordered)
    return _percentile(samples, 0.50), _percentile(samples, 0.99)


def _percentile(samples: list[float], fraction: float) -> float:
    index = min(len(samples) - 1, max(0, round(fraction * (len(samples) - 1))))
    return samples[index]


async def memory_per_client(service: ServiceProcess, secret: str, clients: int) -> float:
    """KiB of the service's RSS per idle connected client, with ``clients`` connected."""
    await asyncio.sleep(1.0)
    before = service.rss_kib()
    connected: list[PushListener] = []
    try:
        for start in range(0, clients, 50):
            batch = [PushListener(service.url) for _ in range(start, min(start + 50, clients))]
            await asyncio.gather(
                *(
                    client.connect(mint(secret, f"bench-idle-{start + offset}"))
                    for offset, client in enumerate(batch)
                )
            )
            connected.extend(batch)
        await asyncio.sleep(2.0)
        after = service.rss_kib()
    finally:
        await asyncio.gather(*(client.close() for client in connected), return_exceptions=True)
    return (after - before) / clients


class Tally:
    """A Socket.IO client that only counts the pushes it receives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = socketio.AsyncClient(reconnection=False)
        self.count = 0
        for event in PUSH_EVENTS:
            self.client.on(event, self._push)

    async def _push(self, record: dict[str, Any]) -> None:
        self.count += 1

    async def connect(self, token: str) -> None:
        await self.client.connect(
            self.url, auth={"token": token}, transports=["websocket"], wait_timeout=30
        )

    async def close(self) -> None:
        await self.client.disconnect()


async def soak(
    service: ServiceProcess,
    connection: AbstractRobustConnection,
    secret: str,
    total: int,
    chunk: int = 10_000,
) -> tuple[float, int, int]:
    """RSS growth (%) of the service process over ``total`` messages, all pushed to one client,
    measured from the end of a warm-up (the first tenth, at least one chunk) to the end."""
    tally = Tally(service.url)
    await tally.connect(mint(secret, traffic.ADMIN_USER, ("admin",)))
    chunk = max(1, min(chunk, total // 10))  # at least ten chunks, so there is a warm-up
    warm_up = max(chunk, total // 10)
    warm_rss: int | None = None
    published = 0
    try:
        while published < total:
            size = min(chunk, total - published)
            await traffic.publish(connection, size, start=published)
            published += size
            deadline = time.monotonic() + 300
            while tally.count < published:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"soak stalled at {tally.count} of {published} pushes")
                await asyncio.sleep(0.05)
            if warm_rss is None and published >= warm_up:
                warm_rss = service.rss_kib()
    finally:
        await tally.close()
    end_rss = service.rss_kib()
    assert warm_rss is not None
    return (end_rss - warm_rss) / warm_rss * 100, warm_rss, end_rss
