"""A saga as a new user writes one, run by a real ``operations serve``: the ``quiet_served``
fixture (a plugin: see ``pytest_plugins`` in conftest.py)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from operations.settings import Settings
from tests.support import ServeProcess, serve_process

# A saga as a new user writes one: it ends by calling complete() or reject() and publishes no
# message with a terminal Saga header; its compensation publishes one without a code.
QUIET_SAGA = textwrap.dedent(
    """
    from dataclasses import dataclass

    from operations.sagas import Saga, SagaContext, SagaMessage, compensates, start, step
    from operations.states import State


    @dataclass
    class QuietData:
        delivery_id: str = ""


    class QuietDeliverySaga(Saga[QuietData]):
        name = "quiet_delivery"
        data_type = QuietData
        http_start = "start_delivery"

        @start("start_delivery")
        async def begin(self, message: SagaMessage, context: SagaContext) -> None:
            self.data.delivery_id = str(message.get("deliveryId") or "")
            plan = message.get("plan")
            if plan == "complete":
                self.complete()
            elif plan == "refuse":
                self.reject("the parcel is too heavy", "too_heavy")

        @compensates("start_delivery")
        async def call_off(self, message: SagaMessage, context: SagaContext) -> None:
            body = {"deliveryId": self.data.delivery_id}
            self.publish("deliveries", "fail_delivery", body, saga_state=State.REJECTED)

        @step("delivery_started")
        async def started(self, message: SagaMessage, context: SagaContext) -> None:
            self.complete()
    """
)


@pytest.fixture
async def quiet_served(
    tmp_path: Path, settings: Settings, redis_client: aioredis.Redis, amqp: object
) -> AsyncIterator[ServeProcess]:
    (tmp_path / "quiet.py").write_text(QUIET_SAGA, encoding="utf-8")
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "OPERATIONS_SAGA_TYPES": "quiet:QuietDeliverySaga",
    }
    async with serve_process(settings, env) as process:
        yield process
