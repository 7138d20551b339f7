"""Micro-batching under failure: a message Redis refuses is dead-lettered alone, and a batch cut
off by a Redis outage is applied exactly once when Redis answers again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import redis.asyncio as aioredis

from operations.amqp.catalogue import Catalogue
from operations.amqp.consumer import Consumer
from operations.amqp.copies import REASON_HEADER
from operations.amqp.topology import declare_queue
from operations.envelope import Envelope
from operations.errors import StoreError, StoreUnavailable
from operations.metrics import Registry
from operations.pipeline import Pipeline
from operations.records import Change
from operations.settings import DEFAULT_MESSAGES_FILE, Settings
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from tests.support import Publisher, dead_letters, eventually, uid

PACCO = Catalogue.load(DEFAULT_MESSAGES_FILE)


class CutOffStore(RedisStore):
    """Applies the first half of the first batch it gets, then loses Redis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cut = False
        self.batches: list[int] = []

    async def apply(self, envelopes: Sequence[Envelope]) -> list[Change | StoreError]:
        self.batches.append(len(envelopes))
        if not self.cut and len(envelopes) > 1:
            self.cut = True
            await super().apply(envelopes[: len(envelopes) // 2])
            raise StoreUnavailable("connection lost in the middle of the pipeline")
        return await super().apply(envelopes)


async def prefill(
    amqp: aio_pika.abc.AbstractRobustConnection, publisher: Publisher, queue: str, ops: list[str]
) -> None:
    async with amqp.channel() as channel:
        await declare_queue(channel, PACCO.bindings, queue)
    for op in ops:
        await publisher.publish("create_order", op, user="u")


def consumer_for(settings: Settings, store: RedisStore, metrics: Registry) -> Consumer:
    pipeline = Pipeline(PACCO, store, metrics, settings.max_message_bytes)
    return Consumer(
        settings.amqp_url,
        settings.queue,
        settings.dead_letter_queue,
        PACCO.bindings,
        pipeline,
        metrics,
        prefetch=256,
        batch_size=64,
    )


async def test_a_message_redis_refuses_is_dead_lettered_and_its_batch_applies(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any, publisher: Publisher
) -> None:
    ops = [uid() for _ in range(20)]
    refused = ops[7]
    keys = Keys(settings.key_prefix)
    await redis_client.set(keys.record(refused), "not a hash")  # WRONGTYPE for that one
    await prefill(amqp, publisher, settings.queue, ops)
    metrics = Registry()
    store = RedisStore(redis_client, 60, keys=keys)
    consumer = consumer_for(settings, store, metrics)
    await consumer.start()
    try:

        async def applied() -> bool:
            return metrics.messages.value(kind="command", outcome="applied") == len(ops) - 1

        await eventually(applied, "every other message of the batch to apply")
        (letter,) = await dead_letters(amqp, settings.dead_letter_queue, 1)
        assert letter.correlation_id == refused
        assert "WRONGTYPE" in str(letter.headers[REASON_HEADER])
        for op in ops:
            if op != refused:
                assert await store.get(op) is not None
    finally:
        await consumer.stop()
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(settings.queue, durable=True)
        assert queue.declaration_result.message_count == 0, "something was left unacknowledged"


async def test_a_batch_cut_off_by_a_redis_outage_applies_exactly_once(
    settings: Settings, redis_client: aioredis.Redis, amqp: Any, publisher: Publisher
) -> None:
    ops = [uid() for _ in range(40)]
    await prefill(amqp, publisher, settings.queue, ops)
    metrics = Registry()
    store = CutOffStore(redis_client, 60, keys=Keys(settings.key_prefix))
    consumer = consumer_for(settings, store, metrics)
    await consumer.start()
    try:

        async def all_done() -> bool:
            counted = metrics.messages
            return (
                counted.value(kind="command", outcome="applied")
                + counted.value(kind="command", outcome="duplicate")
            ) >= len(ops)

        await eventually(all_done, "the batch to be applied after the outage")
        await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
    assert store.cut and metrics.store_retries.value() >= 1
    first_batch = store.batches[0]
    # The half applied before the cut comes back as duplicates, and nothing else does.
    duplicates = metrics.messages.value(kind="command", outcome="duplicate")
    assert duplicates == first_batch // 2
    assert metrics.messages.value(kind="command", outcome="applied") == len(ops) - duplicates
    for op in ops:
        record = await store.get(op)
        assert record is not None and record.version == 1
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(settings.queue, durable=True)
        dlq = await channel.declare_queue(settings.dead_letter_queue, durable=True)
        assert queue.declaration_result.message_count == 0
        assert dlq.declaration_result.message_count == 0
