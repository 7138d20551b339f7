"""What the service declares on RabbitMQ for its catalogue: an exchange that already exists with the
same type is used as it is; one of another type stops start-up with exit code 2, naming it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.catalogue import Catalogue
from operations.errors import CatalogueError
from operations.settings import Settings
from tests.api import bearer, recorded
from tests.conftest import SECRET
from tests.support import run_operations, start_service, uid

Token = Callable[..., str]


def catalogue(tmp_path: Path, exchange: str) -> Path:
    path = tmp_path / "messages.json"
    path.write_text(
        json.dumps({"shop": {"exchange": exchange, "commands": ["buy"], "events": ["bought"]}}),
        encoding="utf-8",
    )
    return path


async def test_an_exchange_of_another_type_stops_start_up_with_exit_code_2_naming_it(
    settings: Settings, servers: tuple[str, str], amqp: AbstractRobustConnection, tmp_path: Path
) -> None:
    exchange = f"shop-{uuid.uuid4().hex[:8]}"
    async with amqp.channel() as channel:
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    began = time.monotonic()
    try:
        code, _, stderr = await run_operations(
            "serve",
            env={
                "OPERATIONS_AMQP_URL": servers[0],
                "OPERATIONS_REDIS_URL": servers[1],
                "OPERATIONS_QUEUE": settings.queue,
                "OPERATIONS_MESSAGES_FILE": str(catalogue(tmp_path, exchange)),
                "OPERATIONS_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
                "OPERATIONS_PORT": "0",
                "OPERATIONS_JWT_SECRET": SECRET,
                "OPERATIONS_SAGAS": "false",
            },
        )
    finally:
        async with amqp.channel() as channel:
            await channel.exchange_delete(exchange)
    assert code == 2, stderr
    assert time.monotonic() - began < 30
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("operations: cannot start: ")
    assert f"exchange {exchange!r} already exists on RabbitMQ" in last
    assert "durable topic exchange" in last
    assert "retrying" not in stderr


async def test_an_exchange_that_exists_with_the_same_type_is_used_as_it_is(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: AbstractRobustConnection,
    token: Token,
    tmp_path: Path,
) -> None:
    exchange = f"shop-{uuid.uuid4().hex[:8]}"
    async with amqp.channel() as channel:
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    try:
        configured = replace(settings, messages_file=catalogue(tmp_path, exchange), sagas=False)
        async with (
            start_service(configured) as running,
            httpx.AsyncClient(base_url=running.url, timeout=30) as http,
            amqp.channel() as channel,
        ):
            user, operation = uid(), str(uuid.uuid4())
            context = orjson.dumps({"user": {"id": user}, "name": "buy"}).decode()
            target = await channel.get_exchange(exchange)
            await target.publish(
                aio_pika.Message(
                    b"{}", correlation_id=operation, headers={"message_context": context}
                ),
                routing_key="buy",
            )
            record = (await recorded(http, operation, bearer(token(user)))).json()
            assert record["state"] == "pending" and record["name"] == "buy"
    finally:
        async with amqp.channel() as channel:
            await channel.exchange_delete(exchange)


@pytest.mark.parametrize(
    ("document", "refusal"),
    [
        ({"s": {"format": "kafka", "exchange": "x", "commands": ["a"]}}, "unknown format 'kafka'"),
        ({"s": {"format": 7, "exchange": "x", "commands": ["a"]}}, "unknown format 7"),
        (
            {"s": {"exchange": "x", "commands": ["a"], "operationId": "correlationId"}},
            "'operationId' does not apply to the convey format",
        ),
        (
            {"s": {"exchange": "x", "commands": ["a"], "routingKeys": ["a"]}},
            "'routingKeys' does not apply to the convey format",
        ),
    ],
)
def test_a_catalogue_entry_is_held_to_its_format(document: object, refusal: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        Catalogue.from_document(document, source="test.json")
    assert refusal in caught.value.reason
