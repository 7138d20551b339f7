"""Unit tests for operations.backoff: the delays, the ceiling, the reset and the early wake."""

from __future__ import annotations

import asyncio
import time

import pytest

from operations.backoff import Backoff


async def delays_of(backoff: Backoff, count: int) -> list[float]:
    seen = []
    for _ in range(count):
        seen.append(backoff.delay)
        await backoff.wait()
    return seen


async def test_delays_grow_by_the_factor_up_to_the_ceiling() -> None:
    backoff = Backoff(0.001, 0.008)
    assert await delays_of(backoff, 6) == [0.001, 0.002, 0.004, 0.008, 0.008, 0.008]
    assert backoff.failures == 6


async def test_a_reset_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(0.001, 0.01, factor=3)
    assert await delays_of(backoff, 3) == pytest.approx([0.001, 0.003, 0.009])
    backoff.reset()
    assert (backoff.delay, backoff.failures) == (0.001, 0)
    assert await delays_of(backoff, 2) == pytest.approx([0.001, 0.003])


async def test_a_wait_sleeps_its_delay() -> None:
    backoff = Backoff(0.05, 1.0)
    started = time.monotonic()
    await backoff.wait()
    assert time.monotonic() - started >= 0.05
    assert backoff.delay == 0.1


async def test_a_wait_ends_early_when_its_event_is_set() -> None:
    backoff = Backoff(30.0, 60.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    started = time.monotonic()
    await backoff.wait(until=stop)
    assert time.monotonic() - started < 5
    assert backoff.delay == 60.0


async def test_a_set_event_does_not_wait_at_all() -> None:
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    await Backoff(30.0, 30.0).wait(until=stop)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("first", "ceiling", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_a_back_off_that_cannot_work_is_refused(
    first: float, ceiling: float, factor: float
) -> None:
    with pytest.raises(ValueError, match="not a back-off"):
        Backoff(first, ceiling, factor)
