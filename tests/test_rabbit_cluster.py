"""Quorum queues on a real 3-node RabbitMQ cluster on loopback, started by
``scripts/services.sh start-rabbit-cluster``: the service's queues have a member on every node,
messages published on one node are tracked by a service connected to another, and tracking goes
on while the node holding a queue's leader is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis

from operations.amqp.queues import QueueType
from operations.amqp.topology import declare_dead_letter_queue, declare_queue
from operations.settings import Settings
from tests.support import (
    PACCO,
    SERVICES,
    RunningService,
    SteadyPublisher,
    broker_queues,
    eventually,
    new_id,
    start_service,
)

pytestmark = pytest.mark.rabbit_cluster


def url(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def node(port: int) -> str:
    return f"operations-{port}@localhost"


@pytest.fixture(scope="session")
def rabbit_cluster(servers: tuple[str, str]) -> Iterator[list[int]]:
    """The AMQP ports of the 3-node test cluster, started next to the suite's RabbitMQ."""
    given = os.environ.get("OPERATIONS_RABBIT_CLUSTER_PORT")
    base = int(given) if given else int(os.environ.get("OPERATIONS_AMQP_PORT", "5672")) + 100
    env = {**os.environ, "OPERATIONS_RABBIT_CLUSTER_PORT": str(base)}
    subprocess.run([str(SERVICES), "start-rabbit-cluster"], env=env, check=True, timeout=300)
    yield [base, base + 1, base + 2]


async def services_sh(*args: str, ports: list[int]) -> None:
    process = await asyncio.create_subprocess_exec(
        str(SERVICES),
        *args,
        env={**os.environ, "OPERATIONS_RABBIT_CLUSTER_PORT": str(ports[0])},
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(process.wait(), timeout=180) == 0, args


@pytest.fixture
def clustered(settings: Settings, rabbit_cluster: list[int]) -> Settings:
    return replace(settings, amqp_url=url(rabbit_cluster[0]), queue_type=QueueType.QUORUM)


@pytest.fixture
async def cluster_service(
    clustered: Settings, rabbit_cluster: list[int], redis_client: aioredis.Redis
) -> AsyncIterator[Callable[[], contextlib.AbstractAsyncContextManager[RunningService]]]:
    """Starts the service on the cluster's first node when asked; deletes its queues after."""
    yield lambda: start_service(clustered)
    sagas = clustered.saga_queue
    names = [clustered.queue, clustered.dead_letter_queue]
    names += [sagas, f"{sagas}.dead-letter", f"{sagas}.retry"]
    async with await aio_pika.connect(url(rabbit_cluster[0])) as cleanup:
        for name in names:
            async with cleanup.channel() as channel:
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    await channel.queue_delete(name)


async def tracked(running: RunningService, op: str, token: Callable[..., str]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token('ops-admin', 'admin')}"}
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:

        async def read() -> dict[str, Any] | None:
            response = await http.get(f"/operations/{op}", headers=headers)
            if response.status_code != 200 or response.json()["state"] != "completed":
                return None
            record: dict[str, Any] = response.json()
            return record

        return await eventually(read, f"operation {op} completed", timeout=30)


async def test_the_quorum_queues_have_a_member_on_every_node_and_tracking_works(
    rabbit_cluster: list[int],
    clustered: Settings,
    cluster_service: Callable[[], contextlib.AbstractAsyncContextManager[RunningService]],
    token: Callable[..., str],
) -> None:
    async with cluster_service() as running:
        queues = await broker_queues("rabbit-cluster-ctl", str(rabbit_cluster[1]))
        sagas = clustered.saga_queue
        names = [clustered.queue, clustered.dead_letter_queue]
        names += [sagas, f"{sagas}.dead-letter", f"{sagas}.retry"]
        for name in names:
            assert queues[name]["type"] == "quorum", name
            assert sorted(queues[name]["members"]) == [node(port) for port in rabbit_cluster]

        # Published on another node than the one the service consumes on.
        op, user = new_id(), str(uuid.uuid4())
        await SteadyPublisher(
            url(rabbit_cluster[1]), context=lambda _: f'{{"user":{{"id":"{user}"}}}}'
        ).run([("create_order", op, new_id()), ("order_created", op, new_id())], pace=0)
        record = await tracked(running, op, token)
        assert record["userId"] == user
        assert record["version"] == 2


async def test_tracking_goes_on_while_the_node_of_a_queue_leader_is_stopped(
    rabbit_cluster: list[int],
    clustered: Settings,
    cluster_service: Callable[[], contextlib.AbstractAsyncContextManager[RunningService]],
    token: Callable[..., str],
) -> None:
    first, second, third = rabbit_cluster
    # Declared from the third node, the tracking queue has its leader there (client-local).
    arguments = clustered.queue_arguments
    async with await aio_pika.connect(url(third)) as connection:
        channel = await connection.channel()
        await declare_dead_letter_queue(channel, clustered.dead_letter_queue, arguments)
        await declare_queue(
            channel, PACCO.bindings, clustered.queue, arguments, clustered.dead_letter_queue
        )
    queues = await broker_queues("rabbit-cluster-ctl", str(first))
    assert queues[clustered.queue]["leader"] == node(third)

    async with cluster_service() as running:
        before = new_id()
        await SteadyPublisher(url(second)).run([("order_deleted", before, new_id())], pace=0)
        await tracked(running, before, token)
        await services_sh("stop-rabbit-cluster-node", str(third), ports=rabbit_cluster)
        try:
            after = new_id()
            await SteadyPublisher(url(second)).run([("order_deleted", after, new_id())], pace=0)
            await tracked(running, after, token)
            queues = await broker_queues("rabbit-cluster-ctl", str(first))
            assert queues[clustered.queue]["leader"] in (node(first), node(second))
            assert all((await running.service.api.readiness.report()).values())
        finally:
            await services_sh("start-rabbit-cluster", ports=rabbit_cluster)
