"""Test helpers: ids, a Convey-shaped publisher, a service running on a real port, polling. What a
user of the HTTP API does (a bearer header, placing an order, reading a record) is in api.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aio_pika
import httpx
import orjson
import uvicorn
from aiormq.exceptions import AMQPError

from operations.amqp.catalogue import Catalogue
from operations.cli import server_config
from operations.envelope import Envelope
from operations.service import Service
from operations.settings import DEFAULT_MESSAGES_FILE, Settings
from operations.states import MessageKind, State

T = TypeVar("T")
PACCO = Catalogue.load(DEFAULT_MESSAGES_FILE)
SERVICES = Path(__file__).resolve().parent.parent / "scripts" / "services.sh"
Style = Literal["dotnet", "python"]


def as_text(value: bytes | str) -> str:
    """A reply of a Redis client that does not decode responses, as text."""
    return value.decode() if isinstance(value, bytes) else value


def pending_command(op: str, user: str | None, name: str = "create_order") -> Envelope:
    """A command that makes ``op`` pending, as the store applies it."""
    return Envelope(
        message=name,
        exchange="orders",
        kind=MessageKind.COMMAND,
        state=State.PENDING,
        operation_id=op,
        message_id=new_id(),
        user_id=user,
        name=name,
    )


def new_id() -> str:
    return uuid.uuid4().hex  # .NET's "N" format, as Pacco writes GUIDs


def uid() -> str:
    """A new id in the canonical GUID form (with dashes), as the API writes ids."""
    return str(uuid.uuid4())


def context(user: str | None, name: str | None = None, style: Style = "dotnet") -> bytearray | str:
    """A CorrelationContext: PascalCase bytes as .NET sends it, or camelCase text from Python.

    AMQP carries Python bytes as a byte array, which arrives as a bytearray."""
    if style == "dotnet":
        document: dict[str, Any] = {
            "CorrelationId": new_id(),
            "Name": name,
            "TraceId": "t-1",
            "CreatedAt": dt.datetime.now(dt.UTC).isoformat(),
        }
        if user is not None:
            document["User"] = {"Id": user, "IsAuthenticated": True, "Role": "user", "Claims": {}}
        return bytearray(orjson.dumps(document))
    document = {"correlationId": new_id(), "name": name}
    if user is not None:
        document["user"] = {"id": user, "isAuthenticated": True, "role": "user", "claims": {}}
    return orjson.dumps(document).decode()


class Publisher:
    def __init__(self, connection: aio_pika.abc.AbstractRobustConnection) -> None:
        self.connection = connection
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    async def __aenter__(self) -> Publisher:
        self.channel = await self.connection.channel(publisher_confirms=True)
        for name in PACCO.exchanges:
            self.exchanges[name] = await self.channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.channel is not None
        await self.channel.close()

    async def publish(
        self,
        message: str,
        operation_id: str | None,
        *,
        user: str | None = None,
        name: str | None = None,
        saga: str | bytearray | None = None,
        body: bytes | dict[str, Any] | None = None,
        message_id: str | None = "auto",
        style: Style = "dotnet",
        raw_context: Any = "default",
        headers: dict[str, Any] | None = None,
        exchange: str | None = None,
    ) -> str | None:
        subscription = PACCO.lookup(exchange or "", message)
        target = exchange or (subscription.exchange if subscription else "orders")
        all_headers: dict[str, Any] = dict(headers or {})
        if raw_context == "default":
            all_headers["message_context"] = context(user, name, style)
        elif raw_context is not None:
            all_headers["message_context"] = raw_context
        if saga is not None:
            if style == "dotnet" and isinstance(saga, str):
                saga = bytearray(saga.encode())  # as a .NET publisher sends it
            all_headers["Saga"] = saga
        if message_id == "auto":
            message_id = new_id()
        payload = body if isinstance(body, bytes) else orjson.dumps(body or {})
        await self.exchanges[target].publish(
            aio_pika.Message(
                payload,
                headers=all_headers,
                correlation_id=operation_id,
                message_id=message_id,
                content_type="application/json",
                timestamp=dt.datetime.now(dt.UTC),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=message,
        )
        return message_id


@dataclass
class RunningService:
    service: Service
    server: uvicorn.Server
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def start_service(
    settings: Settings, environ: dict[str, str] | None = None
) -> AsyncIterator[RunningService]:
    """The service in this process; ``environ`` is where its saga types read their settings."""
    service = Service(settings, environ or {})
    config = server_config(service.asgi, settings, "127.0.0.1", settings.port)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), "the HTTP server to start")
    await eventually(lambda: _ready(service), "the consumer to connect")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningService(service, server, port)
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=30)
        except TimeoutError:
            for pending in asyncio.all_tasks():
                pending.print_stack(limit=30)
            raise


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def _ready(service: Service) -> bool:
    return all((await service.api.readiness.report()).values())


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    timeout: float = 15.0,
    every: float = 0.02,
) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def dead_letters(
    connection: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    count: int,
    timeout: float = 15.0,
    arguments: dict[str, Any] | None = None,
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take ``count`` messages off the dead-letter queue (declared with ``arguments``, such as
    a quorum queue's), waiting for them to arrive."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with connection.channel() as channel:
        dlq = await channel.declare_queue(queue, durable=True, arguments=arguments)

        async def more() -> bool:
            message = await dlq.get(no_ack=True, fail=False)
            if message is not None:
                taken.append(message)
            return len(taken) >= count

        await eventually(more, f"{count} dead letters", timeout=timeout)
        extra = await dlq.get(no_ack=True, fail=False)
        assert extra is None, f"more dead letters than expected: {extra.headers if extra else ''}"
    return taken


class SteadyPublisher:
    """Publishes with confirms and retries each message until the broker confirms it, across lost
    connections and a broker restart, so that nothing is lost on the publishing side.

    Each message is (routing key, operation id, message id), with an optional body after them
    (``{}`` otherwise); ``context`` gives its ``message_context`` header from its routing key."""

    def __init__(
        self,
        url: str,
        exchange: str = "orders",
        context: Callable[[str], str | bytearray] = lambda _: '{"user":{"id":"u"}}',
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.context = context
        self.confirmed = 0

    async def reached(self, count: int) -> bool:
        return self.confirmed >= count

    async def run(
        self, messages: Sequence[tuple[str, str, str] | tuple[str, str, str, bytes]], pace: float
    ) -> None:
        connection = await aio_pika.connect_robust(self.url, reconnect_interval=0.5)
        try:
            channel = await connection.channel(publisher_confirms=True)
            for routing_key, op, message_id, *body in messages:
                while True:
                    try:
                        exchange = await channel.get_exchange(self.exchange)
                        await exchange.publish(
                            aio_pika.Message(
                                body[0] if body else b"{}",
                                correlation_id=op,
                                message_id=message_id,
                                headers={"message_context": self.context(routing_key)},
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key=routing_key,
                            timeout=5,
                        )
                        self.confirmed += 1
                        break
                    except (AMQPError, ConnectionError, TimeoutError, RuntimeError):
                        await asyncio.sleep(0.2)
                await asyncio.sleep(pace)
        finally:
            await connection.close()


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


async def broker_queues(*where: str, vhost: str = "/") -> dict[str, dict[str, Any]]:
    """The queues RabbitMQ has on ``vhost``, by name, with their type, arguments, members and
    leader, as ``rabbitmqctl list_queues`` tells them: ``where`` is ``rabbitmqctl`` for the test
    node, or ``rabbit-cluster-ctl PORT`` for a node of the test cluster (scripts/services.sh)."""
    process = await asyncio.create_subprocess_exec(
        str(SERVICES),
        *where,
        "list_queues",
        "-p",
        vhost,
        "name",
        "type",
        "arguments",
        "members",
        "leader",
        "--formatter",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    queues: dict[str, dict[str, Any]] = {}
    for queue in orjson.loads(stdout):
        queue["arguments"] = {name: value for name, _, value in queue["arguments"]}
        queues[queue["name"]] = queue
    return queues


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (``/`` when it names none)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path.removeprefix("/")) or "/"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    """``operations serve`` running as a process of its own."""

    process: asyncio.subprocess.Process
    url: str
    log: Any

    def logs(self) -> str:
        """What it has logged so far (its last 5,000 characters), for failure messages."""
        self.log.seek(0)
        text: str = self.log.read().decode("utf-8", "replace")
        return text[-5_000:]


@contextlib.asynccontextmanager
async def serve_process(
    settings: Settings, env: dict[str, str], port: int | None = None
) -> AsyncIterator[ServeProcess]:
    """``operations serve`` as a process on ``port`` (a free one by default: give the same one
    again for a restarted service), with the test's Redis, RabbitMQ, queue and key prefix, and
    ``env`` on top; ready (broker and Redis connected) when yielded."""
    port = free_port() if port is None else port
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the process ends
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "operations", "serve"),
        env={
            **os.environ,
            "OPERATIONS_AMQP_URL": settings.amqp_url,
            "OPERATIONS_REDIS_URL": settings.redis_url,
            "OPERATIONS_JWT_SECRET": settings.jwt_secret or "",
            "OPERATIONS_QUEUE": settings.queue,
            "OPERATIONS_KEY_PREFIX": settings.key_prefix,
            "OPERATIONS_HOST": "127.0.0.1",
            "OPERATIONS_PORT": str(port),
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,  # a file, not a pipe: its logs must never fill a buffer and stall it
    )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        if process.returncode is not None:
            log.seek(0)
            raise AssertionError(f"operations serve exited: {log.read().decode()[-3000:]}")
        try:
            async with httpx.AsyncClient(base_url=url, timeout=2) as client:
                return (await client.get("/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        await eventually(ready, "operations serve to be ready", timeout=30, every=0.2)
        yield ServeProcess(process, url, log)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def run_to_end(
    *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None, seconds: float = 60
) -> tuple[int, str, str]:
    """Runs a program to its end without blocking the service running in this loop, killed past
    ``seconds``; its exit status, standard output and standard error."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=seconds)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
