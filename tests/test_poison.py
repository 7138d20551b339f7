"""No message can stall a queue (issue 23, finding 1): a poison saga start published over AMQP
leaves other users' orders finishing and ends in the dead-letter workbench with its reason; a
message whose processing keeps raising is dead-lettered after a bounded number of attempts, on
classic and quorum queues, while the rest of its batch is applied once; and /ready tells."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.consumer import Consumer
from operations.amqp.copies import FAILURES_HEADER, REASON_HEADER
from operations.amqp.queues import QueueArguments, QueueType
from operations.amqp.settlements import Ack, Settlement
from operations.amqp.topology import declare_queue
from operations.auth.identity import normalise_id
from operations.envelope import Delivered, Envelope
from operations.errors import StoreError
from operations.metrics import Registry
from operations.pipeline import Pipeline
from operations.records import Change
from operations.sagas import Saga, SagaContext, SagaMessage, start
from operations.settings import Settings
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from tests.api import bearer
from tests.dead_letter_support import letters
from tests.demo_support import simulated
from tests.support import (
    PACCO,
    Publisher,
    RunningService,
    dead_letters,
    eventually,
    new_id,
    serve_process,
    start_service,
)

Token = Callable[..., str]
QUORUM = {"x-queue-type": "quorum"}
DEFECT = "a defect this message brings out"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def publish_raw(
    amqp: AbstractRobustConnection,
    exchange: str,
    routing_key: str,
    body: bytes,
    operation_id: str,
    user: str,
    message_context: str | None = None,
) -> None:
    async with amqp.channel(publisher_confirms=True) as channel:
        target = await channel.declare_exchange(exchange, "topic", durable=True)
        await target.publish(
            aio_pika.Message(
                body,
                headers={
                    "message_context": message_context
                    or orjson.dumps({"user": {"id": user}}).decode(),
                    "Saga": "Pending",
                },
                correlation_id=operation_id,
                message_id=new_id(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )


async def finished(http: httpx.AsyncClient, user_token: str, op: str) -> dict[str, Any] | None:
    response = await http.get(f"/operations/{op}", headers=bearer(user_token))
    if response.status_code != 200:
        return None
    record: dict[str, Any] = response.json()
    return record if record["state"] != "pending" else None


async def test_a_poison_saga_start_leaves_other_users_orders_finishing(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: AbstractRobustConnection,
    amqp_url: str,
    token: Token,
) -> None:
    """Before, the deep start made every commit of its batch fail and the batch was requeued
    for ever: B's orders never finished. The oversized one was committed as it was. Through a
    real ``operations serve``."""
    served = replace(settings, dead_letter_keep=True)
    types = "operations.pacco.ordermaking:OrderMakingSaga,examples.delivery:ParcelDeliverySaga"
    admin, alice, bob = bearer(token("ops", "admin")), new_id(), new_id()
    deep, large, huge, context = new_id(), new_id(), new_id(), new_id()
    async with (
        serve_process(
            served, {"OPERATIONS_SAGA_TYPES": types, "OPERATIONS_DEAD_LETTER_KEEP": "true"}
        ) as running,
        simulated(amqp_url),
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):
        body = b'{"deliveryId":"d","parcelId":"p","x":' + nested(252) + b"}"
        await publish_raw(amqp, "deliveries", "start_delivery", body, deep, alice)
        oversized = {"deliveryId": "d" * 70_000, "parcelId": "p"}
        await publish_raw(
            amqp, "deliveries", "start_delivery", orjson.dumps(oversized), large, alice
        )
        number = b'{"deliveryId":"d","parcelId":"p","n":18446744073709551616}'
        await publish_raw(amqp, "deliveries", "start_delivery", number, huge, alice)
        deep_context = '{"user":{"id":"a"},"x":' + nested(100).decode() + "}"
        await publish_raw(
            amqp,
            "deliveries",
            "start_delivery",
            b'{"deliveryId":"d","parcelId":"p"}',
            context,
            alice,
            deep_context,
        )

        started = time.monotonic()
        orders = []
        for _ in range(3):
            response = await http.post(
                "/orders",
                json={"customerId": new_id(), "parcelIds": [new_id()]},
                headers=bearer(token(bob)),
            )
            assert response.status_code == 202, response.text
            orders.append(response.json()["operationId"])
        for op in orders:

            async def done(op: str = op) -> dict[str, Any] | None:
                return await finished(http, token(bob), op)

            record = await eventually(done, f"B's order {op}: {running.logs()}", timeout=10)
            assert record["state"] == "completed", record
        assert time.monotonic() - started < 10  # about 1.5 s on a quiet machine

        saga_dead_letters = served.saga_queue

        async def all_four() -> list[dict[str, Any]]:
            found = await letters(http, admin, queue=saga_dead_letters)
            return found if len(found) >= 4 else []

        found = await eventually(all_four, "the poison messages in the workbench", timeout=20)
        by_operation = {letter["correlationId"]: letter for letter in found}
        assert set(by_operation) == {deep, large, huge, context}
        assert by_operation[huge]["reason"] == (
            "saga message start_delivery: n: an integer outside the signed 64-bit range"
        )
        assert by_operation[context]["reason"].startswith(
            "saga message start_delivery: headers.message_context: x[0]"
        )
        assert by_operation[deep]["reason"].startswith("saga message start_delivery: x[0]")
        assert by_operation[deep]["reason"].endswith("nested more than 32 levels deep")
        reason = by_operation[large]["reason"]
        assert reason.startswith(
            "saga message start_delivery: saga parcel_delivery: step start_delivery left data"
            " that is 700"
        ), reason
        assert reason.endswith(" bytes as JSON, over the limit of 65536"), reason
        assert by_operation[large]["routingKey"] == "start_delivery"
        # Nothing of the oversized step was committed.
        saga = await http.get(f"/operations/{large}/saga", headers=admin)
        assert saga.status_code == 404, saga.text


@dataclass
class Defective:
    """A processor with a defect that one message brings out, every time: any batch holding it
    raises, as the deep saga start made every commit of its batch fail."""

    processed: Counter[bytes]
    poison_attempts: int = 0

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]:
        if any(delivered.body == b"poison" for delivered in batch):
            self.poison_attempts += 1
            raise RuntimeError(DEFECT)
        self.processed.update(delivered.body for delivered in batch)
        return [Ack("fine") for _ in batch]


@pytest.fixture(params=["classic", "quorum"])
def queue_type(request: pytest.FixtureRequest) -> QueueType:
    return QueueType(request.param)


@pytest.fixture(params=["retry-queue", "own-queue"])
def retry_queue(request: pytest.FixtureRequest, settings: Settings) -> str | None:
    return f"{settings.saga_queue}.retry" if request.param == "retry-queue" else None


async def test_a_message_that_keeps_failing_is_dead_lettered_and_its_batch_applied_once(
    amqp_url: str,
    amqp: AbstractRobustConnection,
    settings: Settings,
    queue_type: QueueType,
    retry_queue: str | None,
) -> None:
    """Before, the whole batch was requeued after every failure, for ever on a classic queue,
    and on a quorum queue until the broker's delivery limit moved the poison, without a reason."""
    arguments = QueueArguments(queue_type)
    processor, metrics = Defective(Counter()), Registry()
    consumer = Consumer(
        amqp_url,
        settings.queue,
        settings.dead_letter_queue,
        [],
        processor,
        metrics,
        batch_size=64,
        queue_arguments=arguments,
        max_attempts=3,
        retry_queue=retry_queue,
        retry_delay_seconds=0.05,
    )
    healthy = [f"healthy-{n}".encode() for n in range(10)]
    async with amqp.channel(publisher_confirms=True) as channel:
        queue = await channel.declare_queue(
            settings.queue, durable=True, arguments=arguments.consumed(settings.dead_letter_queue)
        )
        for body in [*healthy[:5], b"poison", *healthy[5:]]:
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id=body.decode()), routing_key=queue.name
            )
    await consumer.start()
    try:
        (dead,) = await dead_letters(
            amqp,
            settings.dead_letter_queue,
            1,
            timeout=20,
            arguments=QUORUM if arguments.quorum else None,
        )

        async def all_applied() -> bool:
            return set(processor.processed) == set(healthy)

        await eventually(all_applied, "every healthy message to be applied")
        assert consumer.failing
        async with amqp.channel(publisher_confirms=True) as channel:
            await channel.default_exchange.publish(
                aio_pika.Message(b"after", message_id="after"), routing_key=settings.queue
            )

        async def recovered() -> bool:
            return not consumer.failing

        await eventually(recovered, "the consumer to process a message without failing")
    finally:
        await consumer.stop()
    # The rest of its batch was applied once each, and never requeued.
    assert processor.processed == Counter([*healthy, b"after"])
    # Three failures: each a try alone, after a try with its batch when it shared one.
    assert 3 <= processor.poison_attempts <= 6
    assert dead.body == b"poison" and dead.message_id == "poison"
    headers = dead.headers or {}
    assert headers[REASON_HEADER] == f"failed 3 times, the last with RuntimeError: {DEFECT}"
    assert headers[FAILURES_HEADER] == 2
    assert metrics.message_failures.value(consumer="operations", outcome="retried") == 2
    assert metrics.message_failures.value(consumer="operations", outcome="dead_lettered") == 1


@dataclass
class FragileData:
    note: str = ""


class FragileSaga(Saga[FragileData]):
    """A saga over a Pacco message whose id cannot be resolved for a message asking to explode:
    an error outside any step, in the coordinator's own path, every time."""

    name = "fragile"
    data_type = FragileData

    def resolve_id(self, message: SagaMessage, context: SagaContext) -> str | None:
        if message.get("explode"):
            raise RuntimeError(DEFECT)
        return context.correlation_id

    @start("add_vehicle")
    async def added(self, message: SagaMessage, context: SagaContext) -> None:
        self.complete()


@pytest.fixture
async def fragile(
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: AbstractRobustConnection,
    queue_type: QueueType,
) -> AsyncIterator[RunningService]:
    served = replace(
        settings,
        dead_letter_keep=True,
        queue_type=queue_type,
        saga_types=("tests.test_poison:FragileSaga",),
        max_delivery_attempts=3,
        saga_retry_delay_ms=300,
    )
    async with start_service(served) as running:
        yield running


async def ready(http: httpx.AsyncClient) -> tuple[int, dict[str, bool]]:
    response = await http.get("/ready")
    return response.status_code, response.json()["checks"]


async def test_ready_is_503_while_a_consumer_keeps_failing_and_the_message_ends_dead_lettered(
    fragile: RunningService, amqp: AbstractRobustConnection, token: Token, settings: Settings
) -> None:
    """Before, /ready stayed 200 and the message was requeued for ever (classic), or moved by
    the broker without a reason at the delivery limit (quorum)."""
    admin = bearer(token("ops", "admin"))
    poison = new_id()
    async with httpx.AsyncClient(base_url=fragile.url, timeout=30) as http:
        assert await ready(http) == (
            200,
            {
                "rabbitmq": True,
                "redis": True,
                "redis-pool": True,
                "consumer": True,
                "saga-consumer": True,
            },
        )
        await publish_raw(amqp, "vehicles", "add_vehicle", b'{"explode": true}', poison, "a")

        async def failing() -> tuple[int, dict[str, bool]] | None:
            answer = await ready(http)
            return answer if answer[0] == 503 else None

        _, checks = await eventually(failing, "/ready to say 503", timeout=20)
        assert checks == {
            "rabbitmq": True,
            "redis": True,
            "redis-pool": True,
            "consumer": True,
            "saga-consumer": False,
        }

        async def kept() -> list[dict[str, Any]]:
            return await letters(http, admin, queue=settings.saga_queue)

        (letter,) = await eventually(kept, "the failing message in the workbench", timeout=20)
        assert letter["correlationId"] == poison
        assert letter["reason"] == f"failed 3 times, the last with RuntimeError: {DEFECT}"
        assert (letter["exchange"], letter["routingKey"]) == ("vehicles", "add_vehicle")
        assert (await ready(http))[0] == 503  # no success since

        await publish_raw(amqp, "vehicles", "add_vehicle", b"{}", new_id(), "b")

        async def healthy() -> bool:
            return (await ready(http))[0] == 200

        await eventually(healthy, "/ready to say 200 after a success", timeout=20)
    metrics = fragile.service.metrics
    assert metrics.message_failures.value(consumer="operations-sagas", outcome="retried") == 2
    assert metrics.message_failures.value(consumer="operations-sagas", outcome="dead_lettered") == 1


class FlakyStore(RedisStore):
    """Raises, as a defect would, on the first two batches holding the operation ``flaky``: with
    its batch, and alone."""

    def __init__(self, flaky: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flaky = flaky
        self.raised = 0

    async def apply(self, envelopes: Sequence[Envelope]) -> list[Change | StoreError]:
        if self.raised < 2 and any(e.operation_id == self.flaky for e in envelopes):
            self.raised += 1
            raise RuntimeError(DEFECT)
        return await super().apply(envelopes)


async def test_a_failed_tracking_message_is_applied_when_it_comes_back(
    settings: Settings, redis_client: aioredis.Redis, amqp: AbstractRobustConnection
) -> None:
    """Sent back to the tracking queue through the default exchange, it is still read as the
    command it was first published as."""
    ops = [new_id() for _ in range(8)]
    async with Publisher(amqp) as publisher:
        async with amqp.channel() as channel:
            await declare_queue(channel, PACCO.bindings, settings.queue)
        for op in ops:
            await publisher.publish("create_order", op, user="u")
    metrics = Registry()
    store = FlakyStore(normalise_id(ops[3]), redis_client, 60, keys=Keys(settings.key_prefix))
    consumer = Consumer(
        settings.amqp_url,
        settings.queue,
        settings.dead_letter_queue,
        PACCO.bindings,
        Pipeline(PACCO, store, metrics, settings.max_message_bytes),
        metrics,
        batch_size=64,
    )
    await consumer.start()
    try:

        async def applied() -> bool:
            return metrics.messages.value(kind="command", outcome="applied") == len(ops)

        await eventually(applied, "every message to be applied, the flaky one on its return")
    finally:
        await consumer.stop()
    assert store.raised == 2
    assert metrics.message_failures.value(consumer="operations", outcome="retried") == 1
    assert metrics.messages.value(kind="command", outcome="duplicate") == 0
    for op in ops:
        record = await store.get(normalise_id(op))
        assert record is not None and record.name == "create_order", op
    async with amqp.channel() as channel:
        for name in (settings.queue, settings.dead_letter_queue):
            queue = await channel.declare_queue(name, durable=True)
            assert queue.declaration_result.message_count == 0, name


async def test_a_tracking_body_nested_too_deep_is_applied_without_it_and_dead_lettered(
    service: RunningService, amqp: AbstractRobustConnection, settings: Settings
) -> None:
    deep, deeper = new_id(), new_id()
    async with Publisher(amqp) as publisher:
        await publisher.publish("create_order", deep, user="u", body=b'{"x":' + nested(40) + b"}")
        await publisher.publish(
            "create_order_rejected",
            deeper,
            user="u",
            body=b'{"reason":"no","code":"c","x":' + nested(5_000) + b"}",
        )
    letters_ = await dead_letters(amqp, settings.dead_letter_queue, 2)
    reasons = {letter.correlation_id: str(letter.headers[REASON_HEADER]) for letter in letters_}
    assert reasons[deep].startswith("body: x[0]")
    assert reasons[deep].endswith(": nested more than 32 levels deep")
    assert reasons[deeper] == "body: not valid JSON"
    for op, state in ((deep, "pending"), (deeper, "rejected")):
        record = await service.service.store.get(normalise_id(op))
        assert record is not None and record.state == state, op
