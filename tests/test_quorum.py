"""Quorum queues on the real RabbitMQ node (``OPERATIONS_QUEUE_TYPE=quorum``): every queue the
service declares is one, messages flow, early saga messages go round the quorum retry queue (a
poison message: tests/test_poison.py), a queue of the other type stops start-up, a lost
connection declares the same queues again, and an order's saga runs with the simulated services
on quorum queues too."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.copies import ATTEMPTS_HEADER, REASON_HEADER
from operations.amqp.queues import QueueType
from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests.api import bearer
from tests.conftest import SECRET
from tests.support import (
    SERVICES,
    Publisher,
    RunningService,
    SteadyPublisher,
    broker_queues,
    dead_letters,
    eventually,
    new_id,
    run_operations,
    start_service,
    vhost_of,
)

QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture
def quorum(settings: Settings) -> Settings:
    return replace(
        settings,
        queue_type=QueueType.QUORUM,
        queue_delivery_limit=3,
        saga_early_retries=2,
        saga_retry_delay_ms=250,
    )


@pytest.fixture
async def quorum_service(
    quorum: Settings, redis_client: aioredis.Redis, amqp: object
) -> AsyncIterator[RunningService]:
    async with start_service(quorum) as running:
        yield running


def service_queues(settings: Settings) -> dict[str, str]:
    """Each queue the service declares, and the queue it dead-letters to at the delivery limit
    (its expired messages' target, for the retry queue; nothing for a dead-letter queue)."""
    sagas = settings.saga_queue
    return {
        settings.queue: settings.dead_letter_queue,
        settings.dead_letter_queue: "",
        sagas: f"{sagas}.dead-letter",
        f"{sagas}.dead-letter": "",
        f"{sagas}.retry": sagas,
    }


async def tracked(
    http: httpx.AsyncClient, token: Callable[..., str], op: str, state: str
) -> dict[str, Any]:
    headers = bearer(token("ops-admin", "admin"))

    async def read() -> dict[str, Any] | None:
        response = await http.get(f"/operations/{op}", headers=headers)
        if response.status_code != 200 or response.json()["state"] != state:
            return None
        record: dict[str, Any] = response.json()
        return record

    return await eventually(read, f"operation {op} {state}")


async def test_every_queue_the_service_declares_is_a_quorum_queue(
    quorum_service: RunningService,
    quorum: Settings,
    publisher: Publisher,
    token: Callable[..., str],
) -> None:
    queues = await broker_queues("rabbitmqctl", vhost=vhost_of(quorum.amqp_url))
    for name, target in service_queues(quorum).items():
        queue = queues[name]
        assert queue["type"] == "quorum", name
        arguments = queue["arguments"]
        assert arguments["x-queue-type"] == "quorum"
        if name.endswith(".dead-letter"):
            assert arguments == {"x-queue-type": "quorum"}, name
            continue
        assert arguments["x-dead-letter-exchange"] == ""
        assert arguments["x-dead-letter-routing-key"] == target
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert arguments["x-overflow"] == "reject-publish"
        if name.endswith(".retry"):
            assert "x-delivery-limit" not in arguments
        else:
            assert arguments["x-delivery-limit"] == 3, name

    op, user = new_id(), str(uuid.uuid4())
    await publisher.publish("create_order", op, user=user, name="create_order")
    await publisher.publish("order_created", op, user=user, name="create_order")
    async with httpx.AsyncClient(base_url=quorum_service.url, timeout=30) as http:
        record = await tracked(http, token, op, "completed")
    assert record["userId"] == user
    assert record["version"] == 2


async def test_an_early_saga_message_goes_round_the_quorum_retry_queue(
    quorum_service: RunningService,
    quorum: Settings,
    publisher: Publisher,
    amqp: AbstractRobustConnection,
) -> None:
    """Per-message expiry on a quorum retry queue, then dead-lettering back to the saga queue."""
    began = time.monotonic()
    await publisher.publish(
        "order_created", new_id(), user="u", saga="Pending", body={"orderId": "o"}
    )
    (dead,) = await dead_letters(amqp, f"{quorum.saga_queue}.dead-letter", 1, arguments=QUORUM)
    assert time.monotonic() - began >= 2 * 0.25
    headers = dead.headers or {}
    assert headers[REASON_HEADER] == (
        "saga message order_created: no saga to take it yet after 2 retries"
    )
    assert headers[ATTEMPTS_HEADER] == 2
    deaths = headers["x-death"]
    assert isinstance(deaths, list)
    (death,) = deaths
    assert isinstance(death, dict)
    assert (death["queue"], death["reason"], death["count"]) == (
        f"{quorum.saga_queue}.retry",
        "expired",
        2,
    )
    metrics = quorum_service.service.metrics
    assert metrics.sagas.value(saga="order_making", outcome="early") == 3


@pytest.mark.parametrize(
    ("existing", "wanted", "queue_of"),
    [
        ("classic", "quorum", lambda settings: settings.queue),
        ("quorum", "classic", lambda settings: settings.saga_queue),
    ],
    ids=["classic-to-quorum", "quorum-to-classic"],
)
async def test_a_queue_of_the_other_type_stops_start_up_with_exit_code_2(
    settings: Settings,
    servers: tuple[str, str],
    redis_client: aioredis.Redis,
    amqp: AbstractRobustConnection,
    existing: str,
    wanted: str,
    queue_of: Callable[[Settings], str],
) -> None:
    queue = queue_of(settings)
    async with amqp.channel() as channel:
        arguments = QUORUM if existing == "quorum" else None
        await channel.declare_queue(queue, durable=True, arguments=arguments)
    began = time.monotonic()
    code, _, stderr = await run_operations(
        "serve",
        env={
            "OPERATIONS_AMQP_URL": servers[0],
            "OPERATIONS_REDIS_URL": servers[1],
            "OPERATIONS_QUEUE": settings.queue,
            "OPERATIONS_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
            "OPERATIONS_PORT": "0",
            "OPERATIONS_JWT_SECRET": SECRET,
            "OPERATIONS_QUEUE_TYPE": wanted,
        },
    )
    assert code == 2, stderr
    assert time.monotonic() - began < 30
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("operations: cannot start: ")
    assert f"queue {queue!r} already exists" in last
    assert f"OPERATIONS_QUEUE_TYPE={wanted}" in last
    assert "To migrate: stop every process consuming" in last
    assert "OPERATIONS_QUEUE" in last
    # Stopped at the first refusal: one attempt, no retries.
    assert stderr.count("already exists on RabbitMQ") == 2  # the log line and the last line
    assert "retrying" not in stderr


@pytest.mark.slow
async def test_after_a_lost_connection_the_quorum_queues_are_declared_again_alike(
    quorum_service: RunningService,
    quorum: Settings,
    amqp_url: str,
    token: Callable[..., str],
) -> None:
    """The robust connection declares its queues again on reconnecting, with the same arguments,
    so the broker accepts them and the service is ready again."""
    before = await broker_queues("rabbitmqctl", vhost=vhost_of(quorum.amqp_url))
    process = await asyncio.create_subprocess_exec(
        str(SERVICES),
        "rabbitmqctl",
        "close_all_connections",
        "a test closes every connection",
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await process.wait() == 0
    service = quorum_service.service

    async def reconnected() -> bool:
        return service.metrics.reconnects.value(dependency="rabbitmq") >= 2

    await eventually(reconnected, "both connections to come back", timeout=30)

    async def ready() -> bool:
        return all((await service.api.readiness.report()).values())

    await eventually(ready, "the service to be ready again", timeout=30)
    after = await broker_queues("rabbitmqctl", vhost=vhost_of(quorum.amqp_url))
    for name in service_queues(quorum):
        assert after[name]["arguments"] == before[name]["arguments"]
    op = new_id()
    await SteadyPublisher(amqp_url).run([("order_deleted", op, new_id())], pace=0)
    async with httpx.AsyncClient(base_url=quorum_service.url, timeout=30) as http:
        await tracked(http, token, op, "completed")


async def test_the_simulated_services_refuse_a_queue_of_the_other_type_with_exit_code_2(
    amqp_url: str, amqp: AbstractRobustConnection
) -> None:
    async with amqp.channel() as channel:
        await channel.declare_queue("demo.orders", durable=True)
    code, _, stderr = await run_operations(
        "demo-services", env={"OPERATIONS_AMQP_URL": amqp_url, "OPERATIONS_QUEUE_TYPE": "quorum"}
    )
    assert code == 2, stderr
    assert "queue 'demo.orders' already exists" in stderr
    assert "OPERATIONS_QUEUE_TYPE=quorum" in stderr


async def test_an_order_runs_its_saga_to_completed_on_quorum_queues(
    quorum_service: RunningService, quorum: Settings, token: Callable[..., str]
) -> None:
    """The order-maker saga's whole round trip, the simulated services' queues quorum too."""
    user = str(uuid.uuid4())
    async with (
        DemoServices(quorum.amqp_url, latency_ms=0, queue_arguments=quorum.queue_arguments),
        httpx.AsyncClient(base_url=quorum_service.url, timeout=30) as http,
    ):
        response = await http.post(
            "/orders",
            json={"customerId": str(uuid.uuid4()), "parcelIds": [str(uuid.uuid4())]},
            headers=bearer(token(user)),
        )
        assert response.status_code == 202, response.text
        record = await tracked(http, token, response.json()["operationId"], "completed")
        queues = await broker_queues("rabbitmqctl", vhost=vhost_of(quorum.amqp_url))
    assert record["name"] == "make_order_completed"
    assert record["userId"] == user
    for name in ("demo.orders", "demo.vehicles", "demo.availability"):
        assert queues[name]["type"] == "quorum"
        assert queues[name]["arguments"] == QUORUM
