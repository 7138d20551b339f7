"""The garbage collector of ``operations serve``: its thresholds from OPERATIONS_GC_THRESHOLDS,
said at start-up, and every collection's pause on the metrics page."""

from __future__ import annotations

import gc

import httpx
import pytest

from operations.errors import SettingsError
from operations.garbage import Pauses
from operations.metrics import Registry
from operations.settings import Settings
from tests.scrape import Scrape
from tests.support import eventually, serve_process


def test_the_thresholds_default_to_the_services_own() -> None:
    assert Settings.from_env({}).gc_thresholds == (50_000, 20, 10)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1000, 10, 10", (1000, 10, 10)), ("python", (700, 10, 10)), ("PYTHON", (700, 10, 10))],
)
def test_thresholds_parse(raw: str, expected: tuple[int, int, int]) -> None:
    assert Settings.from_env({"OPERATIONS_GC_THRESHOLDS": raw}).gc_thresholds == expected


@pytest.mark.parametrize(
    "raw", ["50000,20", "a,b,c", "0,10,10", "-1,10,10", "1,1,1,1", "5,10001,1"]
)
def test_bad_thresholds_are_refused_by_name(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"OPERATIONS_GC_THRESHOLDS": raw})
    assert caught.value.variable == "OPERATIONS_GC_THRESHOLDS"


def test_each_collection_is_observed_while_installed() -> None:
    metrics = Registry()
    pauses = Pauses(metrics.gc_pauses)
    pauses.install()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.remove()
    gc.collect()
    page = Scrape(metrics.render().decode())
    assert page.value("operations_gc_pause_seconds_count") == 2


async def test_serve_sets_the_thresholds_and_measures_its_pauses(
    settings: Settings, redis_client: object, amqp: object
) -> None:
    env = {"OPERATIONS_GC_THRESHOLDS": "100,10,10", "OPERATIONS_LOG_FORMAT": "json"}
    async with serve_process(settings, env) as process:
        async with httpx.AsyncClient(base_url=process.url) as http:

            async def collected() -> Scrape | None:
                page = Scrape((await http.get("/metrics")).text)
                count = page.value("operations_gc_pause_seconds_count") or 0
                return page if count > 0 else None

            page = await eventually(collected, "a collection's pause on the metrics page")
        process.log.seek(0)
        log = process.log.read().decode()
    assert "garbage collector thresholds 100, 10, 10" in log
    assert (page.value("operations_gc_pause_seconds_sum") or 0) > 0
