"""Orderings and failures that break systems like this one: competing service instances on one
queue, shuffled and duplicated deliveries, a RabbitMQ restart in the middle of a stream, and
Redis going away while a message waits."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from operations.settings import Settings
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from tests.live import LiveClient
from tests.scrape import Scrape
from tests.support import Publisher, SteadyPublisher, eventually, new_id, start_service

ROOT = Path(__file__).resolve().parent.parent


StreamEntries = list[tuple[bytes | str | None, dict[bytes | str, bytes | str] | None]] | None
"""An XRANGE reply as redis-py types it."""


def _records_by_op(entries: StreamEntries) -> dict[str, list[dict[str, Any]]]:
    by_op: dict[str, list[dict[str, Any]]] = {}
    for _, fields in entries or []:
        assert fields is not None
        snapshot = orjson.loads(fields[b"op"])
        by_op.setdefault(snapshot["id"], []).append(snapshot)
    return by_op


def assert_never_regressed(changes: list[dict[str, Any]]) -> None:
    """Versions rise one by one, and nothing follows a terminal state."""
    versions = [change["version"] for change in changes]
    assert versions == list(range(1, len(changes) + 1)), versions
    states = [change["state"] for change in changes]
    assert all(state == "pending" for state in states[:-1]), states


async def test_two_instances_racing_never_regress(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any, publisher: Publisher
) -> None:
    rng = random.Random(7)
    operations: dict[str, str] = {}
    deliveries: list[tuple[str, str, str]] = []  # (message, operation, message id)
    for _ in range(150):
        op = str(uuid.uuid4())
        final = rng.choice(["order_created", "create_order_rejected"])
        operations[op] = "completed" if final == "order_created" else "rejected"
        steps = ["create_order", "add_parcel_to_order", "assign_vehicle_to_order", final]
        deliveries.extend((message, op, new_id()) for message in steps)
    deliveries += rng.sample(deliveries, len(deliveries) // 4)  # redeliveries
    rng.shuffle(deliveries)

    async with start_service(settings) as first, start_service(settings) as second:
        for message, op, message_id in deliveries:
            await publisher.publish(
                message,
                op,
                user="u",
                name=message,
                message_id=message_id,
                body={"code": "no", "reason": "because"},
            )
        keys = Keys(settings.key_prefix)

        async def all_final() -> bool:
            async with redis_client.pipeline(transaction=False) as pipe:
                for op in operations:
                    pipe.hget(keys.record(op), "s")
                states = await pipe.execute()
            return all(
                state is not None and state.decode() == operations[op]
                for op, state in zip(operations, states, strict=True)
            )

        await eventually(all_final, "every operation to reach its final state", timeout=30)
        for running in (first, second):
            counted = running.service.metrics.messages
            assert counted.value(kind="command", outcome="applied") > 0, "an instance sat idle"

    entries = await redis_client.xrange(keys.changes(0))
    by_op = _records_by_op(entries)
    assert set(by_op) == set(operations)
    for op, changes in by_op.items():
        assert_never_regressed(changes)
        assert changes[-1]["state"] == operations[op]


@pytest.mark.broker_restart
@pytest.mark.timeout(240)
async def test_a_rabbitmq_restart_mid_stream_loses_no_message(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any, publisher: Publisher
) -> None:
    """Every message published is accounted for: each operation ends at version 2 with both
    its message ids in its history, and each message was applied exactly once."""
    operations = {str(uuid.uuid4()): (new_id(), new_id()) for _ in range(300)}
    messages = [
        (message, op, message_id)
        for op, ids in operations.items()
        for message, message_id in zip(("create_order", "order_created"), ids, strict=True)
    ]
    keys = Keys(settings.key_prefix)

    async with start_service(settings) as running:
        steady = SteadyPublisher(settings.amqp_url)
        stream = asyncio.create_task(steady.run(messages, pace=0.004))
        await eventually(lambda: steady.reached(150), "the stream to get going")
        restart = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "services.sh"), "restart-rabbitmq", env=dict(os.environ)
        )
        assert await asyncio.wait_for(restart.wait(), timeout=120) == 0
        await asyncio.wait_for(stream, timeout=120)
        assert steady.confirmed == len(messages)

        async def all_completed() -> bool:
            async with redis_client.pipeline(transaction=False) as pipe:
                for op in operations:
                    pipe.hget(keys.record(op), "s")
                states = await pipe.execute()
            return all(state == b"completed" for state in states)

        await eventually(all_completed, "every operation to complete after the restart", 60)
        assert running.service.metrics.reconnects.value(dependency="rabbitmq") >= 1
        store = RedisStore(redis_client, settings.operation_ttl_seconds, keys=keys)
        lost = {}
        for op, ids in operations.items():
            record = await store.get(op)
            version = record.version if record is not None else 0
            recorded = tuple(entry["messageId"] for entry in await store.history(op))
            if (version, recorded) != (2, ids):
                lost[op] = (version, recorded, ids)
        assert not lost, f"{len(lost)} operations lack a message, e.g. {next(iter(lost.items()))}"
        counted = running.service.metrics.messages
        assert counted.value(kind="command", outcome="applied") == len(operations)
        assert counted.value(kind="event", outcome="applied") == len(operations)
    entries = await redis_client.xrange(keys.changes(0))
    by_op = _records_by_op(entries)
    assert set(by_op) == set(operations)
    for changes in by_op.values():
        assert_never_regressed(changes)
        assert [change["state"] for change in changes] == ["pending", "completed"]


@pytest.mark.store_restart
@pytest.mark.timeout(120)
async def test_a_redis_outage_is_retried_counted_and_recovered_from(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: Any,
    publisher: Publisher,
    token: Callable[..., str],
) -> None:
    """Redis goes away (shut down, its append-only file kept) while a message waits: the batch is
    held unacknowledged and retried, /ready says so, and once Redis is back the message is
    applied and pushed, and both reconnections are counted."""
    keys = Keys(settings.key_prefix)
    async with start_service(settings) as running:
        metrics = running.service.metrics
        live = LiveClient(running.url)
        await live.connect({"token": token("ops", "admin")})
        http = httpx.AsyncClient(base_url=running.url, timeout=30)
        before, during = str(uuid.uuid4()), str(uuid.uuid4())
        try:
            await publisher.publish("create_order", before, user="u")
            await live.wait_for_state(before, "pending")
            assert metrics.reconnects.value(dependency="redis") == 0
            assert metrics.reconnects.value(dependency="redis-feed") == 0

            await redis_client.shutdown()
            try:
                await publisher.publish("create_order", during, user="u")

                async def retried() -> bool:
                    return metrics.store_retries.value() >= 2

                await eventually(retried, "the consumer to retry the batch Redis did not take")
                ready = await http.get("/ready")
                assert ready.status_code == 503
                assert ready.json()["checks"]["redis"] is False
                assert metrics.messages.value(kind="command", outcome="applied") == 1
            finally:
                started = await asyncio.create_subprocess_exec(
                    str(ROOT / "scripts" / "services.sh"), "start", env=dict(os.environ)
                )
                assert await asyncio.wait_for(started.wait(), timeout=60) == 0

            await live.wait_for_state(during, "pending", timeout=30)
            assert await redis_client.hget(keys.record(during), "v") == b"1"
            assert await redis_client.hget(keys.record(before), "v") == b"1"

            async def recovered() -> bool:
                return (await http.get("/ready")).status_code == 200

            await eventually(recovered, "/ready to answer 200 again")
            assert metrics.reconnects.value(dependency="redis") >= 1
            assert metrics.reconnects.value(dependency="redis-feed") >= 1
            page = Scrape((await http.get("/metrics")).text)
            for dependency in ("redis", "redis-feed"):
                reconnects = page.value("operations_reconnects_total", dependency=dependency)
                assert reconnects is not None and reconnects >= 1
            assert metrics.messages.value(kind="command", outcome="applied") == 2
        finally:
            await http.aclose()
            await live.close()


def test_the_services_script_knows_the_test_servers() -> None:
    """The restart test drives scripts/services.sh with the suite's own environment."""
    assert os.environ.get("OPERATIONS_RUN_DIR"), "run the suite with make test or scripts/test.sh"
    status = subprocess.run(
        [str(ROOT / "scripts" / "services.sh"), "status"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=True,
    )
    assert "rabbitmq running" in status.stderr and "redis running" in status.stderr
