"""``operations bench``: the service's throughput as a ratio to a bare consumer, in one run.

Both drain the same N pre-published messages (one operation each, shaped as a .NET Convey
publisher sends them) from identically bound queues with the same prefetch, against the local
RabbitMQ and Redis named by the settings:

- bare:    an aio-pika consumer that only acknowledges each message;
- service: the service's own consumer and pipeline, until all N operations are applied in Redis.

It prints a table, then one JSON line, last, with ``bare_rate``, ``service_rate`` and ``ratio``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

import aio_pika
import orjson
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from .catalogue import Catalogue
from .consumer import Consumer
from .envelope import Delivered
from .metrics import Registry
from .outcomes import Settlement
from .pipeline import Pipeline
from .settings import Settings
from .store import RedisStore
from .topology import declare_queue

_KINDS = (
    ("orders", "create_order", b"{}"),
    ("orders", "order_created", b"{}"),
    ("orders", "create_order_rejected", b'{"code":"bench","reason":"benchmark rejection"}'),
)


@dataclass
class Figure:
    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class _TimedPipeline(Pipeline):
    first: float | None = None

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]:
        if self.first is None:
            self.first = time.perf_counter()
        return await super().process(batch)


async def run(settings: Settings, messages: int, prefetch: int | None = None) -> int:
    if messages < 1:
        raise SystemExit("operations bench: --messages must be at least 1")
    run_id = uuid.uuid4().hex[:8]
    settings = replace(
        settings,
        queue=f"operations-bench-{run_id}",
        key_prefix=f"bench-{run_id}",
        prefetch=prefetch or settings.prefetch,
    )
    catalogue = Catalogue.load(settings.messages_file)
    bare_queue = f"operations-bench-bare-{run_id}"
    connection = await aio_pika.connect_robust(settings.amqp_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        async with connection.channel() as channel:
            await declare_queue(channel, catalogue, bare_queue)
            await declare_queue(channel, catalogue, settings.queue)
        print(f"publishing {messages} messages to two identically bound queues ...", flush=True)
        await _publish(connection, messages)
        bare = await _bare(connection, bare_queue, messages, settings.prefetch)
        service = await _service(settings, catalogue, redis, messages)
    finally:
        async with connection.channel() as channel:
            for name in (bare_queue, settings.queue, settings.dead_letter_queue):
                await channel.queue_delete(name)
        await _delete_keys(redis, f"{settings.key_prefix}:*")
        await redis.aclose()
        await connection.close()

    ratio = service.rate / bare.rate if bare.rate else 0.0
    print()
    print(f"{'run':<10} {'messages':>9} {'seconds':>9} {'msg/s':>10}  ratio")
    for figure in (bare, service):
        print(
            f"{figure.name:<10} {figure.messages:>9} {figure.seconds:>9.3f} {figure.rate:>10.0f}"
            f"  {figure.rate / bare.rate if bare.rate else 0:.2f}"
        )
    print(f"prefetch {settings.prefetch}, batch size {settings.batch_size}")
    print(
        orjson.dumps(
            {
                "messages": messages,
                "prefetch": settings.prefetch,
                "bare_rate": round(bare.rate, 1),
                "service_rate": round(service.rate, 1),
                "ratio": round(ratio, 3),
            }
        ).decode()
    )
    return 0


async def _publish(connection: AbstractRobustConnection, count: int) -> None:
    async with connection.channel(publisher_confirms=True) as channel:
        exchanges = {
            name: await channel.get_exchange(name) for name in {kind[0] for kind in _KINDS}
        }
        window = 500
        for start in range(0, count, window):
            publishes = []
            for index in range(start, min(start + window, count)):
                exchange, message, body = _KINDS[index % len(_KINDS)]
                context = {
                    "CorrelationId": uuid.uuid4().hex,
                    "Name": message,
                    "User": {"Id": f"bench-user-{index % 100}", "IsAuthenticated": True},
                }
                publishes.append(
                    exchanges[exchange].publish(
                        aio_pika.Message(
                            body,
                            correlation_id=uuid.uuid4().hex,
                            message_id=uuid.uuid4().hex,
                            timestamp=dt.datetime.now(dt.UTC),
                            headers={"message_context": bytearray(orjson.dumps(context))},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=message,
                    )
                )
            await asyncio.gather(*publishes)


async def _bare(
    connection: AbstractRobustConnection, queue_name: str, count: int, prefetch: int
) -> Figure:
    done = asyncio.Event()
    seen = 0
    first: float | None = None

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal seen, first
        if first is None:
            first = time.perf_counter()
        await message.ack()
        seen += 1
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
    return Figure("bare", count, finished - first)


async def _service(
    settings: Settings, catalogue: Catalogue, redis: aioredis.Redis, count: int
) -> Figure:
    metrics = Registry()
    store = RedisStore.from_url(
        settings.redis_url,
        settings.operation_ttl_seconds,
        settings.stream_max_length,
        settings.key_prefix,
    )
    pipeline = _TimedPipeline(catalogue, store, metrics, settings.max_message_bytes)
    consumer = Consumer(
        settings.amqp_url,
        settings.queue,
        settings.dead_letter_queue,
        catalogue,
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
    indexed = await redis.zcard(store.keys.index)
    if indexed != count:
        raise RuntimeError(f"expected {count} operations in Redis, found {indexed}")
    assert pipeline.first is not None
    return Figure("service", count, finished - pipeline.first)


def _applied(metrics: Registry) -> float:
    return sum(
        metrics.messages.value(kind=kind, outcome="applied")
        for kind in ("command", "event", "rejected_event")
    )


async def _delete_keys(redis: aioredis.Redis, pattern: str) -> None:
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=1_000):
        batch.append(key)
        if len(batch) >= 1_000:
            await redis.unlink(*batch)
            batch.clear()
    if batch:
        await redis.unlink(*batch)
