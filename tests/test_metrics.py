"""Unit tests for operations.metrics: values read back through prometheus-client's own API."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import REGISTRY

from operations.metrics import Counter, Gauge, Histogram, Registry
from tests.scrape import Scrape

FAMILIES = {
    "operations_messages": "counter",
    "operations_dead_letters": "counter",
    "operations_batch_seconds": "histogram",
    "operations_reconnects": "counter",
    "operations_store_retries": "counter",
    "operations_swept": "counter",
    "operations_sockets": "gauge",
    "operations_socket_refusals": "counter",
    "operations_pushes": "counter",
    "operations_sagas": "counter",
    "operations_saga_instances": "gauge",
    "operations_saga_messages_published": "counter",
    "operations_saga_publish_failures": "counter",
    "operations_jwks_fetches": "counter",
    "operations_jwks_fetch_failures": "counter",
}


def scrape(registry: Registry) -> Scrape:
    return Scrape(registry.render().decode())


def test_every_family_is_rendered_with_its_type_and_help() -> None:
    page = scrape(Registry())
    for name, kind in FAMILIES.items():
        assert page.types.get(name) == kind, name
        assert page.helps[name], name


def test_the_process_and_gc_collectors_are_on_the_service_registry() -> None:
    registry = Registry()
    gc.collect()
    page = scrape(registry)
    assert page.types["python_gc_collections"] == "counter"
    assert (page.value("python_gc_collections_total", generation="0") or 0) >= 1
    assert registry.registry.get_sample_value("process_cpu_seconds_total") is not None
    assert (page.value("process_resident_memory_bytes") or 0) > 0


def test_registries_are_separate_and_not_the_global_default() -> None:
    first, second = Registry(), Registry()
    first.store_retries.inc()
    assert first.registry is not REGISTRY
    assert first.registry.get_sample_value("operations_store_retries_total") == 1
    assert second.registry.get_sample_value("operations_store_retries_total") == 0
    assert REGISTRY.get_sample_value("operations_store_retries_total") is None


def test_only_the_series_named_by_the_metric_are_rendered() -> None:
    """No ``*_created`` series beside the service's own."""
    names = {name for name in scrape(Registry()).names() if name.startswith("operations_")}
    assert all(not name.endswith("_created") for name in names), names


def test_fresh_registry_has_no_labelled_samples_and_zero_unlabelled_ones() -> None:
    registry = Registry().registry
    assert (
        registry.get_sample_value(
            "operations_messages_total", {"kind": "command", "outcome": "applied"}
        )
        is None
    )
    assert registry.get_sample_value("operations_store_retries_total") == 0


def test_counters_with_labels() -> None:
    registry = Registry()
    registry.messages.inc(outcome="applied", kind="event")
    registry.messages.inc(kind="command", outcome="applied")
    registry.messages.inc(kind="command", outcome="applied")
    registry.messages.inc(3, kind="command", outcome="duplicate")
    registry.reconnects.inc(dependency="redis")
    registry.store_retries.inc()
    page = scrape(registry)
    assert page.value("operations_messages_total", kind="command", outcome="applied") == 2
    assert page.value("operations_messages_total", kind="command", outcome="duplicate") == 3
    assert page.value("operations_messages_total", kind="event", outcome="applied") == 1
    assert page.value("operations_reconnects_total", dependency="redis") == 1
    assert page.value("operations_store_retries_total") == 1
    assert registry.messages.value(kind="command", outcome="applied") == 2
    assert registry.messages.value(outcome="applied", kind="command") == 2
    assert registry.messages.value(kind="event", outcome="stale") == 0


@pytest.mark.parametrize("raw", ['say "hi"', "back\\slash", "two\nlines", 'all\\"\n', "é ✓"])
def test_label_values_come_back_as_they_went_in(raw: str) -> None:
    registry = Registry()
    registry.dead_letters.inc(disposition=raw)
    text = registry.render().decode()
    assert Scrape(text).value("operations_dead_letters_total", disposition=raw) == 1
    assert all(
        line.startswith(("#", "operations_", "process_", "python_")) for line in text.splitlines()
    )


def test_help_text_is_escaped() -> None:
    counter = Counter("c_total", 'A "quoted" back\\slash\nover two lines.', ())
    registry = Registry()
    registry.registry.register(counter)
    page = scrape(registry)
    assert page.helps["c"] == 'A "quoted" back\\slash\nover two lines.'


def test_a_metric_is_scraped_before_its_first_sample() -> None:
    """HELP and TYPE show from the start, so a dashboard or an alert can name the metric before
    anything happened."""
    counter = Counter("c_total", "A counter.", ("reason",))
    [family] = list(counter.collect())
    assert (family.name, family.type, family.samples) == ("c", "counter", [])
    registry = Registry()
    assert "# TYPE operations_dead_letters_dropped_total counter" in registry.render().decode()
    counter.inc(reason="late")
    counter.inc(2, reason="late")
    assert counter.value(reason="late") == 3
    assert counter.value(reason="early") == 0


def test_counter_values_keep_full_precision() -> None:
    """A counter past a million must still change by one: 1e+06 and 1000001 are not the same."""
    registry = Registry()
    registry.store_retries.inc(1_000_001)
    assert scrape(registry).value("operations_store_retries_total") == 1_000_001
    registry.store_retries.inc()
    assert scrape(registry).value("operations_store_retries_total") == 1_000_002


def test_gauge_keeps_its_last_value() -> None:
    gauge = Gauge("g", "A gauge.", ("queue",))
    gauge.set(5, queue="a")
    gauge.set(2.5, queue="a")
    assert gauge.value(queue="a") == 2.5
    registry = Registry()
    registry.sockets.set(3)
    registry.sockets.set(1)
    assert registry.registry.get_sample_value("operations_sockets") == 1


def test_histogram_buckets_are_cumulative_with_count_and_sum() -> None:
    registry = Registry()
    observed = [0.0001, 0.0005, 0.003, 0.003, 0.2, 0.9, 2.5, 7.0]
    for value in observed:
        registry.batch_seconds.observe(value)
    read = registry.registry.get_sample_value
    name = "operations_batch_seconds"
    counts = []
    for bound in registry.batch_seconds.buckets:
        count = read(f"{name}_bucket", {"le": repr(float(bound))})
        assert count == sum(1 for value in observed if value <= bound), bound
        counts.append(count)
    assert counts == sorted(counts)
    assert read(f"{name}_bucket", {"le": "+Inf"}) == len(observed)
    assert read(f"{name}_count") == len(observed)
    assert read(f"{name}_sum") == pytest.approx(sum(observed))


def test_the_inf_bucket_is_written_as_prometheus_reads_it() -> None:
    registry = Registry()
    registry.batch_seconds.observe(100.0)
    text = registry.render().decode()
    assert 'operations_batch_seconds_bucket{le="+Inf"} 1.0' in text.splitlines()
    assert Scrape(text).value("operations_batch_seconds_bucket", le="+Inf") == 1


def test_histogram_le_is_inclusive_and_values_above_go_only_to_inf() -> None:
    histogram = Histogram("h", "A histogram.", (1.0, 2.0))
    for value in (1.0, 2.0, 2.0000001, 100.0):
        histogram.observe(value)
    registry = Registry()
    registry.registry.register(histogram)
    page = scrape(registry)
    assert page.types["h"] == "histogram"
    assert page.value("h_bucket", le="1.0") == 1
    assert page.value("h_bucket", le="2.0") == 2
    assert page.value("h_bucket", le="+Inf") == 4
    assert page.value("h_sum") == pytest.approx(105.0000001)
    assert page.value("h_count") == 4


def test_empty_histogram_renders_zeros() -> None:
    registry = Registry()
    read = registry.registry.get_sample_value
    assert read("operations_batch_seconds_bucket", {"le": "0.5"}) == 0
    assert read("operations_batch_seconds_bucket", {"le": "+Inf"}) == 0
    assert read("operations_batch_seconds_sum") == 0
    assert read("operations_batch_seconds_count") == 0


def test_histogram_sum_keeps_full_precision() -> None:
    registry = Registry()
    registry.batch_seconds.observe(1234.5678)
    registry.batch_seconds.observe(0.0001)
    total = registry.registry.get_sample_value("operations_batch_seconds_sum")
    assert total == pytest.approx(1234.5679, rel=1e-12)
