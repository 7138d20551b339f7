"""The alert rules shipped in deploy/prometheus: valid for Prometheus (``promtool check rules``),
passing their unit tests (``promtool test rules``), caught by those tests when a rule is wrong,
and reading only metrics the service exports, with labels it gives them.

promtool comes from scripts/promtool.sh, which scripts/test.sh runs first: without it these
tests fail rather than skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from operations.metrics import Counter, Gauge, Histogram, Registry

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
OPERATING = ROOT / "docs" / "operating.md"
ALERTS = {
    "SagasOverdue",
    "SagaCompensationFailed",
    "DeadLettersGrowing",
    "ServiceNotReady",
    "ConsumerLag",
    "JwksFetchFailing",
}
TARGET_LABELS = {"instance", "job"}
"""What Prometheus adds to every series it scrapes."""


def promtool() -> str:
    cached = ROOT / ".run" / "tools" / "promtool"
    found = str(cached) if cached.is_file() else shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: scripts/promtool.sh fetches it (scripts/test.sh runs it)")
    return found


def run_promtool(*args: str | Path, cwd: Path = RULES.parent) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def alerts(text: str) -> dict[str, str]:
    """Each alert's name and its rule's text, from ``- alert:`` to the next."""
    parts = re.split(r"^\s*- alert: *", text, flags=re.M)[1:]
    return {part.split(maxsplit=1)[0]: part for part in parts}


def expr(rule: str) -> str:
    found = re.search(r"^\s*expr: *(>-\n)?(.*?)^\s*(for|labels):", rule, re.M | re.S)
    assert found, rule
    return found.group(2)


def test_the_rules_pass_promtool_check() -> None:
    checked = run_promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    tested = run_promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


WRONG_RULES = {
    "overdue summed over processes": (
        "max by (saga, step) (operations_sagas_overdue)",
        "sum by (saga, step) (operations_sagas_overdue)",
    ),
    "compensation failures seen only by the process that ran them": (
        "\n          or\n          max by (saga) (delta(operations_saga_instances"
        '{status="compensation_failed"}[15m])) > 0',
        "",
    ),
    "compensation failures remembered for an hour": (
        'outcome="compensation_failed"}[15m]',
        'outcome="compensation_failed"}[1h]',
    ),
    "dead letters in the workbench summed over processes": (
        "(max(delta(operations_dead_letters_waiting[1h])) or vector(0))",
        "(sum(delta(operations_dead_letters_waiting[1h])) or vector(0))",
    ),
    "dead letters dropped by the bounds not counted": (
        "\n            + (sum(increase(operations_dead_letters_dropped_total[1h])) or vector(0))",
        "",
    ),
    "not ready the other way round": ("operations_ready == 0", "operations_ready == 1"),
    "a process starting counts as not ready": (
        "operations_ready == 0\n        for: 5m",
        "operations_ready == 0\n        for: 2m",
    ),
    "lag on the dead-letter queues too": (
        'operations_queue_messages{queue!~".+[.]dead-letter"}',
        "operations_queue_messages",
    ),
    "lag summed over processes": (
        "max by (queue) (operations_queue_messages{queue!~",
        "sum by (queue) (operations_queue_messages{queue!~",
    ),
    "one failed JWKS fetch alerts": (
        "increase(operations_jwks_fetch_failures_total[10m]) > 0\n        for: 15m",
        "increase(operations_jwks_fetch_failures_total[10m]) > 0\n        for: 5m",
    ),
}


@pytest.mark.parametrize("wrong", WRONG_RULES, ids=list(WRONG_RULES))
def test_a_wrong_rule_fails_the_unit_tests(wrong: str, tmp_path: Path) -> None:
    right, mistaken = WRONG_RULES[wrong]
    text = RULES.read_text()
    assert text.count(right) == 1, right
    (tmp_path / RULES.name).write_text(text.replace(right, mistaken))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    checked = run_promtool("check", "rules", RULES.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # valid, only wrong
    tested = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0, tested.stdout
    assert "FAILED" in tested.stdout + tested.stderr


def exported() -> dict[str, tuple[str, ...]]:
    """Every series name the service exports, with its metric's label names."""
    names: dict[str, tuple[str, ...]] = {}
    for metric in vars(Registry()).values():
        if isinstance(metric, Counter):
            names[metric.name] = metric.label_names  # its name ends in _total already
        elif isinstance(metric, Gauge):
            names[metric.name] = metric.label_names
        elif isinstance(metric, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                names[metric.name + suffix] = ("le",) if suffix == "_bucket" else ()
    return names


def test_every_metric_the_alerts_read_is_exported_with_the_labels_they_use() -> None:
    """A metric or a label renamed in operations/metrics.py breaks this, not the alerts."""
    text = RULES.read_text()
    assert set(alerts(text)) == ALERTS
    names = exported()
    used = set(re.findall(r"\b(operations_[a-z_]+)", text))
    assert used and used <= set(names), used - set(names)
    assert "operations_sagas_overdue" in used
    for name, rule in alerts(text).items():
        query = expr(rule)
        metrics = set(re.findall(r"\b(operations_[a-z_]+)", query))
        assert metrics, name
        for metric, selector in re.findall(r"\b(operations_[a-z_]+)\{([^}]*)\}", query):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert label in names[metric], f"{name}: {metric} has no label {label}"
        declared = {label for metric in metrics for label in names[metric]} | TARGET_LABELS
        for grouping in re.findall(r"\bby \(([^)]*)\)", query):
            labels = {label.strip() for label in grouping.split(",")}
            assert labels <= declared, f"{name}: by ({grouping})"


def test_every_alert_has_a_severity_a_summary_a_description_and_its_section() -> None:
    headings = set(re.findall(r"^### (\w+)$", OPERATING.read_text(), re.M))
    for name, rule in alerts(RULES.read_text()).items():
        assert re.search(r"^\s*severity: (warning|critical)$", rule, re.M), name
        assert re.search(r"^\s*summary: \S", rule, re.M), name
        assert re.search(r"^\s*description: \S", rule, re.M), name
        runbook = re.search(r"^\s*runbook_url: docs/operating\.md#(\w+)$", rule, re.M)
        assert runbook and runbook.group(1) == name.lower(), name
        assert name in headings, f"docs/operating.md has no section ### {name}"
