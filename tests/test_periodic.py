"""A pass of background work that fails is logged and counted, and the next one comes on time;
one that finds Redis away is logged as a wait, not counted."""

from __future__ import annotations

import logging

import pytest

from operations.errors import StoreUnavailable
from operations.metrics import Registry
from operations.periodic import Periodic
from tests.support import eventually


async def test_a_failed_pass_is_counted_and_the_next_comes_on_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, passes = Registry(), list[int]()

    async def work() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise RuntimeError("the first pass breaks")
        if len(passes) == 2:
            raise StoreUnavailable("Redis is away")

    periodic = Periodic("testing", work, 0.01, logging.getLogger("tests.periodic"), metrics)
    with caplog.at_level(logging.WARNING, logger="tests.periodic"):
        periodic.start()
        try:

            async def three() -> bool:
                return len(passes) >= 3

            await eventually(three, "three passes")
        finally:
            await periodic.stop()
    assert metrics.background_pass_failures.value(name="testing") == 1
    assert metrics.background_task_failures.value(task="operations-testing") == 0
    messages = [record.getMessage() for record in caplog.records]
    assert "testing: a pass failed" in messages
    assert "testing waiting for Redis: Redis is away" in messages
