"""The hand-over from a dead-letter queue to Redis survives ``kill -9``: a process killed while it
takes dead letters off the queue leaves each of them either in Redis or in the queue, and the
next process keeps what is left without keeping anything twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
import tempfile
from dataclasses import replace
from typing import Any

import orjson
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.settings import Settings
from operations.store.keys import DeadLetterKeys
from tests.dead_letter_support import copy_headers, put_copies
from tests.support import as_text, eventually, free_port

STAMPED, BROKER_DEAD_LETTERED = 2_000, 100


def broker_headers(queue: str) -> dict[str, Any]:
    """A quorum queue's own dead-lettering at its delivery limit: ``x-death``, no stamped id."""
    return {
        "x-death": [
            {
                "queue": queue,
                "reason": "delivery_limit",
                "exchange": "orders",
                "routing-keys": ["order_created"],
                "count": 1,
                "time": dt.datetime.now(dt.UTC).replace(microsecond=0),
            }
        ]
    }


async def serve(settings: Settings) -> tuple[asyncio.subprocess.Process, Any]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the test
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "operations", "serve"),
        env={
            **os.environ,
            "OPERATIONS_AMQP_URL": settings.amqp_url,
            "OPERATIONS_REDIS_URL": settings.redis_url,
            "OPERATIONS_JWT_SECRET": str(settings.jwt_secret),
            "OPERATIONS_QUEUE": settings.queue,
            "OPERATIONS_KEY_PREFIX": settings.key_prefix,
            "OPERATIONS_HOST": "127.0.0.1",
            "OPERATIONS_PORT": str(free_port()),
            "OPERATIONS_SAGAS": "false",
            "OPERATIONS_DEAD_LETTER_KEEP": "true",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    return process, log


async def test_kill_9_during_the_hand_over_loses_nothing_and_keeps_nothing_twice(
    settings: Settings, amqp: AbstractRobustConnection, redis_client: aioredis.Redis
) -> None:
    kept_settings = replace(settings, sagas=False)
    queue = kept_settings.dead_letter_queue
    stamped = [copy_headers(f"failure {n % 7}") for n in range(STAMPED)]
    await put_copies(amqp, queue, stamped)
    await put_copies(amqp, queue, [broker_headers(kept_settings.queue)] * BROKER_DEAD_LETTERED)
    expected = STAMPED + BROKER_DEAD_LETTERED
    keys = DeadLetterKeys(kept_settings.key_prefix)

    first, first_log = await serve(kept_settings)
    try:

        async def under_way() -> bool:
            if first.returncode is not None:
                first_log.seek(0)
                raise AssertionError(first_log.read().decode()[-3_000:])
            return int(await redis_client.hlen(keys.letters)) >= expected // 5

        await eventually(under_way, "the hand-over to be under way", timeout=60, every=0.002)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
        first_log.close()
    at_kill = int(await redis_client.hlen(keys.letters))
    assert 0 < at_kill < expected, f"killed at {at_kill} of {expected}: not during the hand-over"

    second, second_log = await serve(kept_settings)
    try:

        async def all_kept() -> bool:
            return int(await redis_client.hlen(keys.letters)) >= expected

        await eventually(all_kept, "every dead letter to be kept", timeout=120, every=0.1)

        async def queue_empty() -> bool:
            async with amqp.channel() as channel:
                declared = await channel.declare_queue(queue, durable=True, passive=True)
                return declared.declaration_result.message_count == 0

        await eventually(queue_empty, "the dead-letter queue to be empty", timeout=30)
        await asyncio.sleep(0.5)  # anything still on its way would show now
        assert int(await redis_client.hlen(keys.letters)) == expected
        assert int(await redis_client.zcard(keys.index)) == expected
        members = await redis_client.zrange(keys.index, 0, -1)
        ids = {as_text(member) for member in members if isinstance(member, bytes | str)}
        assert len(ids) == len(members)
        stamped_ids = {headers["x-operations-dead-letter-id"] for headers in stamped}
        assert stamped_ids <= ids
        hashed = [i for i in ids if i.startswith("h")]
        assert len(hashed) == BROKER_DEAD_LETTERED
        kept = await redis_client.hget(keys.letters, hashed[0])
        assert kept is not None
        broker = orjson.loads(kept)["item"]
        assert broker["reason"] == "dead-lettered by the broker: delivery limit"
        assert broker["disposition"] == "delivery-limit"
        assert (broker["queue"], broker["exchange"], broker["routingKey"]) == (
            kept_settings.queue,
            "orders",
            "order_created",
        )
    finally:
        second.terminate()
        await asyncio.wait_for(second.wait(), 15)
        second_log.close()
