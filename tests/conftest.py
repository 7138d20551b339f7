"""Shared fixtures: the real Redis and RabbitMQ (started by scripts/services.sh when the suite is
run without them), a running service on a free port, a publisher shaped like Convey's, and per-test
clean-up of queues and keys."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis

from operations.auth.tokens import mint
from operations.settings import Settings
from tests.support import Publisher, RunningService, start_service

# The saga, dashboard, demo-service and live-push tests share fixtures that live in their support
# modules. The saga support comes first: the dashboard support imports it, and each must be
# imported here first to have its asserts rewritten.
pytest_plugins = [
    "tests.sagas_support",
    "tests.dashboard_support",
    "tests.demo_support",
    "tests.hub_support",
    "tests.identity_provider",
    "tests.tracing_support",
    "tests.quiet_saga",
]

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789abcdef-0123456789"

# Markers of tests over the `slow` threshold (docs/development.md) by their nature: `slow` too.
SLOW_BY_NATURE = {"broker_restart", "store_restart", "faults", "cluster", "rabbit_cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Restarts, clusters and the fault suite carry the ``slow`` marker as well, so that
    ``-m "not slow and not browser"`` (the inner loop, docs/development.md) leaves them out."""
    for item in items:
        if SLOW_BY_NATURE & {mark.name for mark in item.iter_markers()}:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    amqp = os.environ.get("OPERATIONS_TEST_AMQP_URL")
    redis_url = os.environ.get("OPERATIONS_TEST_REDIS_URL")
    if amqp and redis_url:
        yield amqp, redis_url
        return
    env = {
        **os.environ,
        "OPERATIONS_RUN_DIR": str(ROOT / ".run" / "pytest"),
        "OPERATIONS_AMQP_PORT": "5674",
        "OPERATIONS_REDIS_PORT": "6381",
    }
    subprocess.run([str(ROOT / "scripts" / "services.sh"), "start"], env=env, check=True)
    os.environ["OPERATIONS_RUN_DIR"] = env["OPERATIONS_RUN_DIR"]
    os.environ["OPERATIONS_AMQP_PORT"] = env["OPERATIONS_AMQP_PORT"]
    os.environ["OPERATIONS_REDIS_PORT"] = env["OPERATIONS_REDIS_PORT"]
    try:
        yield "amqp://guest:guest@127.0.0.1:5674/", "redis://127.0.0.1:6381/0"
    finally:
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "stop"], env=env, check=False)


@pytest.fixture
def amqp_url(servers: tuple[str, str]) -> str:
    return servers[0]


@pytest.fixture
async def redis_client(servers: tuple[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(servers[1])
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def settings(servers: tuple[str, str]) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        amqp_url=servers[0],
        redis_url=servers[1],
        jwt_secret=SECRET,
        port=0,
        queue=f"operations-test-{suffix}",
        key_prefix=f"test-{suffix}",
        prefetch=256,
        batch_size=64,
        # Most tests read the dead-letter queues themselves; the workbench's tests turn it on.
        dead_letter_keep=False,
    )


@pytest.fixture
async def amqp(
    amqp_url: str, settings: Settings
) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    yield connection
    await connection.close()
    # A connection of its own for the clean-up: after a broker restart the robust one may still be
    # waiting out its reconnect interval when the test ends.
    async with await aio_pika.connect(amqp_url) as cleanup, cleanup.channel() as channel:
        names = [settings.queue, settings.dead_letter_queue]
        saga_queue = settings.saga_queue
        names += [saga_queue, f"{saga_queue}.dead-letter", f"{saga_queue}.retry"]
        names += ["demo.orders", "demo.vehicles", "demo.availability"]
        for name in names:
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                await channel.queue_delete(name)


@pytest.fixture
async def publisher(amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[Publisher]:
    async with Publisher(amqp) as publisher:
        yield publisher


@pytest.fixture
async def service(
    settings: Settings, redis_client: aioredis.Redis, amqp: object
) -> AsyncIterator[RunningService]:
    async with start_service(settings) as running:
        yield running


@pytest.fixture
def token() -> object:
    def make(user: str, *roles: str, ttl: int = 600) -> str:
        return mint(SECRET, user, roles, ttl)

    return make


@pytest.fixture
async def http(service: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        yield client


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger's handlers and level, and uvicorn's server logger's filters and level, as
    they were before a test that configures logging."""
    root, server = logging.getLogger(), logging.getLogger("uvicorn.error")
    handlers, level = root.handlers[:], root.level
    filters, server_level = server.filters[:], server.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    server.filters[:] = filters
    server.setLevel(server_level)
