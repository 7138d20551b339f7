"""``operations dead-letters``: listing, showing, redriving and discarding from the command line,
against the real Redis and RabbitMQ, with clear errors."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace

import aio_pika
import httpx
import orjson
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.auth.tokens import mint
from operations.settings import Settings
from tests.api import bearer
from tests.dead_letter_support import copy_headers, put_copies
from tests.support import eventually, run_operations, start_service


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "OPERATIONS_AMQP_URL": settings.amqp_url,
        "OPERATIONS_REDIS_URL": settings.redis_url,
        "OPERATIONS_KEY_PREFIX": settings.key_prefix,
        "OPERATIONS_QUEUE": settings.queue,
        "OPERATIONS_JWT_SECRET": str(settings.jwt_secret),
    }


async def test_list_show_redrive_and_discard_from_the_command_line(
    settings: Settings, amqp: AbstractRobustConnection, redis_client: aioredis.Redis
) -> None:
    kept_settings = replace(settings, dead_letter_keep=True, sagas=False)
    env = cli_env(kept_settings)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    op = uuid.uuid4().hex
    fixable = copy_headers("store: busy", start, letter_id="fixable-1")
    junk = [
        copy_headers("junk", start + dt.timedelta(seconds=n), routing_key="unbound")
        for n in range(1, 4)
    ]
    await put_copies(amqp, kept_settings.dead_letter_queue, junk)
    async with amqp.channel(publisher_confirms=True) as channel:
        await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"orderId": "o"}',
                headers=fixable,
                correlation_id=op,
                message_id=uuid.uuid4().hex,
                content_type="application/json",
            ),
            routing_key=kept_settings.dead_letter_queue,
        )
    async with start_service(kept_settings) as running:

        async def all_kept() -> bool:
            code, out, _ = await run_operations("dead-letters", "list", "--json", env=env)
            return code == 0 and len(orjson.loads(out)["items"]) == 4

        await eventually(all_kept, "four dead letters to be kept", timeout=30, every=0.5)

        code, out, _ = await run_operations("dead-letters", "list", "--limit", "2", env=env)
        assert code == 0
        lines = out.splitlines()
        assert len(lines) == 3 and lines[-1].startswith("more: --cursor ")
        assert "orders/unbound" in lines[0] and "attempts=1" in lines[0] and "junk" in lines[0]
        cursor = lines[-1].removeprefix("more: --cursor ")
        code, out, _ = await run_operations(
            "dead-letters", "list", "--limit", "2", "--cursor", cursor, env=env
        )
        assert code == 0 and out.splitlines()[-1].startswith("fixable-1 ")

        code, out, _ = await run_operations("dead-letters", "list", "--groups", env=env)
        assert code == 0
        assert [line.split()[:2] for line in out.splitlines()] == [
            ["3", kept_settings.queue],
            ["1", kept_settings.queue],
        ]

        code, out, _ = await run_operations("dead-letters", "show", "fixable-1", env=env)
        assert code == 0
        shown = orjson.loads(out)
        assert shown["body"] == {"orderId": "o"} and shown["reason"] == "store: busy"

        code, out, err = await run_operations("dead-letters", "redrive", "fixable-1", env=env)
        assert (code, out) == (0, "redriven fixable-1\n"), err
        async with httpx.AsyncClient(base_url=running.url) as http:
            token = mint(str(settings.jwt_secret), "ops", ("admin",), 60)
            admin = bearer(token)

            async def applied() -> bool:
                response = await http.get(f"/operations/{op}", headers=admin)
                return response.status_code == 200

            await eventually(applied, "the redriven event to be applied")

        code, _, err = await run_operations(
            "dead-letters", "redrive", "--queue", kept_settings.queue, "--reason", "junk", env=env
        )
        assert code == 1 and "routes 'unbound' on exchange 'orders' to no queue" in err
        code, out, _ = await run_operations(
            "dead-letters", "discard", "--queue", kept_settings.queue, "--reason", "junk", env=env
        )
        assert (code, out) == (0, "discarded 3\n")
        code, out, _ = await run_operations("dead-letters", "list", env=env)
        assert (code, out) == (0, "no dead letters\n")

        code, _, err = await run_operations("dead-letters", "discard", "nope", env=env)
        assert code == 1 and "dead letter 'nope' was not found" in err
        code, _, err = await run_operations(
            "dead-letters", "redrive", "x", "--queue", "q", "--reason", "r", env=env
        )
        assert code == 1 and "either ids or --queue with --reason" in err
        code, _, err = await run_operations("dead-letters", "redrive", env=env)
        assert code == 1 and "name the dead letters to redrive" in err
        code, _, err = await run_operations("dead-letters", "list", "--limit", "0", env=env)
        assert code == 1 and "--limit must be between 1 and 200" in err
        code, _, err = await run_operations("dead-letters", "list", "--cursor", "bad", env=env)
        assert code == 1 and "cursor 'bad' is not one this service issued" in err


async def test_an_unreachable_redis_is_a_clear_error(settings: Settings) -> None:
    env = {**cli_env(settings), "OPERATIONS_REDIS_URL": "redis://127.0.0.1:1/0"}
    code, out, err = await run_operations("dead-letters", "list", env=env)
    assert code == 1 and out == ""
    assert "operations: Redis cannot be reached at redis://127.0.0.1:1/0" in err
