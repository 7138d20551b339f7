"""``operations bench --fanout`` at a tiny scale, against a real service and real client processes,
so that the benchmark cannot rot: every figure is there, and the counts add up."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any

import pytest

from operations.bench import pauses
from operations.bench.crowd import Member, Receipts, change_index, percentile
from operations.metrics import Registry

SECRET = "fanout-secret-0123456789abcdef-0123456789"


def test_a_tally_counts_each_change_once_for_its_owner_only() -> None:
    """What the client processes report: a change reached its owner once, another user's
    change is misrouted, a second copy doubled, and the warm-up left out of the latencies."""
    changes = [(7, 100.0), (7, 100.5), (8, 101.0), (7, 102.0)]
    member = Member("http://127.0.0.1:1", owner=7)
    for index, arrived in ((0, 100.010), (1, 100.50205), (1, 100.530), (2, 101.0), (3, 102.02005)):
        member.indexes.append(index)
        member.times.append(arrived)
    tally = Receipts()
    tally.count(member, changes, due=3, warm_up=1)
    assert (tally.expected, tally.delivered) == (3, 3)
    assert (tally.duplicates, tally.misrouted) == (1, 1)
    assert sorted(tally.buckets.elements()) == [20, 200]  # 2 ms and 20 ms, in 0.1 ms buckets
    assert percentile(dict(tally.buckets), 0.50) == 2.1
    assert percentile(dict(tally.buckets), 0.99) == 20.1


def test_a_change_is_known_by_its_operation_and_state() -> None:
    operation = "0123abcd-0000-4000-8000-00000000002a"
    assert change_index({"id": operation, "state": "pending"}) == 84
    assert change_index({"id": operation, "state": "completed"}) == 85


def test_the_fanout_bench_says_so_and_lowers_the_users_when_the_file_limit_is_too_low() -> None:
    """In a process whose hard limit is 1,000 open files: 2,000 users cannot fit."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (500, 1_000))

    script = (
        "from operations.bench.fanout import fit_file_limit;"
        "print(fit_file_limit(2000, 10, 10.0));"
        "print(fit_file_limit(300, 10, 10.0))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        preexec_fn=low_limit,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "the hard limit is 1000 per process" in lines[0]
    assert "lowering the users to 714" in lines[0]  # 1,000 - 10 admins - 20 churning - 256
    assert lines[1] == "(714, 1000)"
    assert lines[2] == "open files: 1000 allowed per process, 586 needed by the service"
    assert lines[3] == "(300, 1000)"


@pytest.mark.slow
def test_the_fanout_bench_delivers_every_change_to_its_owner_and_every_admin(
    servers: tuple[str, str],
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "operations",
            "bench",
            "--fanout",
            *("--fanout-users", "20", "--fanout-admins", "2", "--fanout-seconds", "3"),
            *("--fanout-rate", "100", "--fanout-churn", "10"),
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "OPERATIONS_AMQP_URL": servers[0],
            "OPERATIONS_REDIS_URL": servers[1],
            "OPERATIONS_JWT_SECRET": SECRET,
        },
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["fanout_users"] == 20 and figures["fanout_admins"] == 2
    assert figures["fanout_changes"] == 300 and figures["fanout_connect_failed"] == 0
    # Each change to its owner and to both admins.
    assert figures["fanout_expected"] == 300 * 3 == figures["fanout_delivered"]
    assert figures["fanout_delivered_pct"] == 100.0
    assert figures["fanout_duplicates"] == 0 and figures["fanout_misrouted"] == 0
    assert figures["fanout_churn_cycles"] > 0 and figures["fanout_churn_lost"] == 0
    for key in ("fanout_p99_ms_users", "fanout_p99_ms_admins"):
        assert 0 < figures[key] < 30_000, key
    assert figures["fanout_p50_ms_users"] <= figures["fanout_p99_ms_users"]
    assert figures["fanout_rss_kib_per_client"] > 0
    for key in ("before", "end", "after"):
        assert figures[f"fanout_churn_rss_kib_{key}"] > 10_000, key
    assert figures["fanout_client_processes"] >= 2  # the churn in a process of its own
    assert 0 <= figures["fanout_service_gc_pauses_over_50ms"] <= figures["fanout_service_gc_pauses"]
    assert figures["fanout_cores_service"] > 0 and figures["fanout_cores_clients"] > 0
    assert "open files:" in result.stdout
    assert "users        20      100.000" in result.stdout


def test_the_services_collector_pauses_are_read_from_its_metrics() -> None:
    metrics = Registry()
    earlier = pauses.parse(metrics.render().decode())
    for seconds in (0.002, 0.03, 0.2, 1.4):
        metrics.gc_pauses.observe(seconds)
    figures = pauses.parse(metrics.render().decode()).since(earlier)
    assert figures == {
        "fanout_service_gc_pauses": 4,
        "fanout_service_gc_pause_seconds": 1.632,
        "fanout_service_gc_pauses_over_50ms": 2,
    }
