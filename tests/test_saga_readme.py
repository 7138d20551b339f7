"""The sagas guide's "Writing a saga" example (docs/sagas-guide.md) runs as written against the
real Redis and RabbitMQ."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import redis.asyncio as aioredis

from operations.sagas import RedisSagaStore, SagaStatus
from tests.support import eventually

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "sagas-guide.md"


def guide_example() -> str:
    """The Python blocks of the guide's "Writing a saga", in order."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("\n## Writing a saga\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, "the saga, then the code that runs it"
    return "\n".join(blocks)


async def test_the_guide_s_saga_example_runs(
    servers: tuple[str, str],
    redis_client: aioredis.Redis,
    amqp: aio_pika.abc.AbstractRobustConnection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = guide_example()
    for default, ours in zip(
        ("amqp://guest:guest@127.0.0.1:5672/", "redis://127.0.0.1:6379/0"), servers, strict=True
    ):
        assert default in code
        code = code.replace(default, ours)
    assert code.rstrip().endswith("asyncio.run(main())")
    code = code.rstrip().removesuffix("asyncio.run(main())")  # this test's loop runs it
    async with amqp.channel() as channel:
        deliveries = await channel.declare_exchange(
            "deliveries", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(deliveries, routing_key="add_delivery_registration")
        namespace: dict[str, Any] = {"__name__": "guide_example"}
        exec(compile(code, str(GUIDE), "exec", dont_inherit=True), namespace)
        await namespace["main"]()

        printed = capsys.readouterr().out
        assert (
            "Processed(saga_name='shipping', saga_id='op-1', outcome=<SagaOutcome.HANDLED"
            in printed
        )
        record = await RedisSagaStore(redis_client).load("shipping", "op-1")
        assert record is not None
        assert record.record.status is SagaStatus.PENDING
        assert record.record.data == {"parcel_id": "p-1", "attempts": []}
        assert record.record.deadline == pytest.approx(time.time() + 300, abs=30)

        async def sent() -> aio_pika.abc.AbstractIncomingMessage | None:
            return await queue.get(no_ack=True, fail=False)

        message = await eventually(sent, "the example's message on the broker")
        assert message.correlation_id == "op-1"
        assert orjson.loads(message.body) == {"parcelId": "p-1"}
        assert (message.headers or {}).get("Saga") in ("Pending", b"Pending")
