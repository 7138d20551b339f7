"""The drain figures: a bare aio-pika consumer (the ceiling) and the service's own consumer and
pipeline, each draining the same N pre-published messages from identically bound queues with the
same prefetch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from operations.amqp import frames
from operations.amqp.catalogue import Catalogue
from operations.amqp.consumer import Consumer
from operations.amqp.settlements import Settlement
from operations.envelope import Delivered
from operations.metrics import Registry
from operations.pipeline import Pipeline
from operations.settings import Settings
from operations.store.redis_store import RedisStore


@dataclass
class Figure:
    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class TimedPipeline(Pipeline):
    first: float | None = None

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]:
        if self.first is None:
            self.first = time.perf_counter()
        return await super().process(batch)


MULTIACK_EVERY = 64


async def bare(
    connection: AbstractRobustConnection,
    queue_name: str,
    count: int,
    prefetch: int,
    multiple_ack: bool = False,
) -> Figure:
    """The ceiling: a consumer that only acknowledges, each message or (``multiple_ack``) every
    64th with one multiple-ack."""
    done = asyncio.Event()
    seen = 0
    first: float | None = None

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal seen, first
        if first is None:
            first = time.perf_counter()
        seen += 1
        if not multiple_ack:
            await message.ack()
        elif seen % MULTIACK_EVERY == 0 or seen >= count:
            await message.ack(multiple=True)
        if seen >= count:
            done.set()

    async with connection.channel() as channel:
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name)
        tag = await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), timeout=600)
        finished = time.perf_counter()
        await queue.cancel(tag)
    assert first is not None
    return Figure("bare multi-ack" if multiple_ack else "bare", count, finished - first)


async def baseline(
    settings: Settings,
    catalogue: Catalogue,
    connection: AbstractRobustConnection,
    redis: aioredis.Redis,
    queue_name: str,
    count: int,
) -> Figure:
    """The original .NET design, for reference: per message, one at a time, read the record,
    write it, push it (through Redis pub/sub, as a SignalR backplane does), then acknowledge."""
    done = asyncio.Event()
    one_at_a_time = asyncio.Lock()
    seen = 0
    first: float | None = None
    prefix = f"{settings.key_prefix}:baseline"

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal seen, first
        async with one_at_a_time:
            if first is None:
                first = time.perf_counter()
            envelope = catalogue.read(message, settings.max_message_bytes)
            key = f"{prefix}:{envelope.operation_id}"
            record: Any = await redis.hgetall(key)
            state = record.get(b"state", b"").decode()
            if not state or state == "pending":
                await redis.hset(
                    key,
                    mapping={
                        "state": envelope.state.value,
                        "name": envelope.name,
                        "userId": envelope.user_id or "",
                    },
                )
                await redis.publish(f"{prefix}:push", orjson.dumps({"id": envelope.operation_id}))
            await message.ack()
            seen += 1
            if seen >= count:
                done.set()

    async with connection.channel() as channel:
        await channel.set_qos(prefetch_count=settings.prefetch)
        queue = await channel.get_queue(queue_name)
        tag = await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), timeout=1_800)
        finished = time.perf_counter()
        await queue.cancel(tag)
    assert first is not None
    return Figure("baseline", count, finished - first)


async def service(
    settings: Settings, catalogue: Catalogue, redis: aioredis.Redis, count: int
) -> Figure:
    # As the service does; the ceilings' connection, opened earlier, keeps aiormq's reader.
    frames.configure(settings.amqp_bulk_frames)
    metrics = Registry()
    store = RedisStore.from_url(
        settings.redis_url,
        settings.operation_ttl_seconds,
        settings.stream_max_length,
        settings.key_prefix,
    )
    pipeline = TimedPipeline(catalogue, store, metrics, settings.max_message_bytes)
    consumer = Consumer(
        settings.amqp_url,
        settings.queue,
        settings.dead_letter_queue,
        catalogue.bindings,
        pipeline,
        metrics,
        prefetch=settings.prefetch,
        batch_size=settings.batch_size,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 600
        while _applied(metrics) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("the service did not drain the queue in 600 s")
            await asyncio.sleep(0.002)
        finished = time.perf_counter()
    finally:
        await consumer.stop()
        await store.close()
    indexed = sum([await redis.zcard(store.keys.index(shard)) for shard in store.keys.shards])
    if indexed != count:
        raise RuntimeError(f"expected {count} operations in Redis, found {indexed}")
    assert pipeline.first is not None
    return Figure("store", count, finished - pipeline.first)


def _applied(metrics: Registry) -> float:
    return sum(
        metrics.messages.value(kind=kind, outcome="applied")
        for kind in ("command", "event", "rejected_event")
    )


async def delete_keys(redis: aioredis.Redis, pattern: str) -> None:
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=1_000):
        batch.append(key)
        if len(batch) >= 1_000:
            await redis.unlink(*batch)
            batch.clear()
    if batch:
        await redis.unlink(*batch)
