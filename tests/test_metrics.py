"""Unit tests for operations.metrics: Prometheus text rendering."""

from __future__ import annotations

import re

import pytest

from operations.metrics import Counter, Gauge, Histogram, Registry

SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+$")


def lines_of(registry: Registry) -> list[str]:
    text = registry.render()
    assert text.endswith("\n")
    assert not text.endswith("\n\n")
    return text.splitlines()


def samples(lines: list[str], name: str) -> dict[str, float]:
    """The samples of one metric family: the part after the name (labels) to the value."""
    found: dict[str, float] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name or series.startswith(name + "{"):
            found[series[len(name) :]] = float(value)
    return found


def test_every_family_has_help_and_type_lines_before_its_samples() -> None:
    registry = Registry()
    registry.messages.inc(kind="command", outcome="applied")
    lines = lines_of(registry)
    families = {
        "operations_messages_total": "counter",
        "operations_dead_letters_total": "counter",
        "operations_batch_seconds": "histogram",
        "operations_reconnects_total": "counter",
        "operations_store_retries_total": "counter",
    }
    for name, kind in families.items():
        help_index = lines.index(next(line for line in lines if line.startswith(f"# HELP {name} ")))
        assert lines[help_index + 1] == f"# TYPE {name} {kind}"
        assert len(lines[help_index]) > len(f"# HELP {name} ")
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line


def test_fresh_registry_has_no_counter_samples() -> None:
    lines = lines_of(Registry())
    assert samples(lines, "operations_messages_total") == {}
    assert samples(lines, "operations_store_retries_total") == {}


def test_counters_with_labels_render_sorted_by_label() -> None:
    registry = Registry()
    registry.messages.inc(outcome="applied", kind="event")
    registry.messages.inc(kind="command", outcome="applied")
    registry.messages.inc(kind="command", outcome="applied")
    registry.messages.inc(3, kind="command", outcome="duplicate")
    registry.reconnects.inc(dependency="redis")
    registry.store_retries.inc()
    lines = lines_of(registry)
    assert samples(lines, "operations_messages_total") == {
        '{kind="command",outcome="applied"}': 2,
        '{kind="command",outcome="duplicate"}': 3,
        '{kind="event",outcome="applied"}': 1,
    }
    assert samples(lines, "operations_reconnects_total") == {'{dependency="redis"}': 1}
    assert samples(lines, "operations_store_retries_total") == {"": 1}
    assert registry.messages.value(kind="command", outcome="applied") == 2
    assert registry.messages.value(outcome="applied", kind="command") == 2
    assert registry.messages.value(kind="nothing") == 0


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("two\nlines", "two\\nlines"),
        ('all\\"\n', 'all\\\\\\"\\n'),
    ],
)
def test_label_values_are_escaped(raw: str, escaped: str) -> None:
    registry = Registry()
    registry.dead_letters.inc(reason=raw)
    lines = lines_of(registry)
    assert samples(lines, "operations_dead_letters_total") == {f'{{reason="{escaped}"}}': 1}
    assert all("\n" not in line for line in lines)


def test_counter_values_keep_full_precision() -> None:
    """A counter past a million must still change by one: 1e+06 and 1000001 are not the same."""
    counter = Counter("c_total", "A counter.")
    counter.inc(1_000_001)
    assert samples(list(counter.render()), "c_total") == {"": 1_000_001}
    counter.inc()
    assert samples(list(counter.render()), "c_total") == {"": 1_000_002}


def test_gauge_renders_its_last_value() -> None:
    gauge = Gauge("g", "A gauge.")
    gauge.set(5, queue="a")
    gauge.set(2.5, queue="a")
    rendered = list(gauge.render())
    assert rendered[:2] == ["# HELP g A gauge.", "# TYPE g gauge"]
    assert samples(rendered, "g") == {'{queue="a"}': 2.5}


def test_histogram_buckets_are_cumulative_with_count_and_sum() -> None:
    registry = Registry()
    observed = [0.0001, 0.0005, 0.003, 0.003, 0.2, 0.9, 2.5, 7.0]
    for value in observed:
        registry.batch_seconds.observe(value)
    lines = lines_of(registry)
    histogram = samples(lines, "operations_batch_seconds_bucket")
    bounds = registry.batch_seconds.buckets
    assert list(histogram) == [f'{{le="{bound:g}"}}' for bound in bounds] + ['{le="+Inf"}']
    for bound in bounds:
        expected = sum(1 for value in observed if value <= bound)
        assert histogram[f'{{le="{bound:g}"}}'] == expected, bound
    assert histogram['{le="+Inf"}'] == len(observed)
    counts = list(histogram.values())
    assert counts == sorted(counts)
    assert samples(lines, "operations_batch_seconds_count") == {"": len(observed)}
    total = samples(lines, "operations_batch_seconds_sum")[""]
    assert total == pytest.approx(sum(observed))


def test_histogram_le_is_inclusive_and_values_above_go_only_to_inf() -> None:
    histogram = Histogram("h", "A histogram.", (1.0, 2.0))
    for value in (1.0, 2.0, 2.0000001, 100.0):
        histogram.observe(value)
    rendered = list(histogram.render())
    assert rendered[:2] == ["# HELP h A histogram.", "# TYPE h histogram"]
    assert samples(rendered, "h_bucket") == {'{le="1"}': 1, '{le="2"}': 2, '{le="+Inf"}': 4}
    assert samples(rendered, "h_sum") == {"": pytest.approx(105.0000001)}
    assert samples(rendered, "h_count") == {"": 4}
    assert [line.split("{")[0].split(" ")[0] for line in rendered[2:]] == [
        "h_bucket",
        "h_bucket",
        "h_bucket",
        "h_sum",
        "h_count",
    ]


def test_empty_histogram_renders_zeros() -> None:
    lines = list(Histogram("h", "A histogram.", (0.5,)).render())
    assert samples(lines, "h_bucket") == {'{le="0.5"}': 0, '{le="+Inf"}': 0}
    assert samples(lines, "h_sum") == {"": 0}
    assert samples(lines, "h_count") == {"": 0}


def test_histogram_sum_keeps_full_precision() -> None:
    histogram = Histogram("h", "A histogram.", (1.0,))
    histogram.observe(1234.5678)
    histogram.observe(0.0001)
    assert samples(list(histogram.render()), "h_sum")[""] == pytest.approx(1234.5679, rel=1e-12)
