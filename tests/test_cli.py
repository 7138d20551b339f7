"""The ``operations`` command as a user runs it: a separate process, configured by environment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import aio_pika
import httpx
import jwt
import pytest

from operations.auth.tokens import TokenVerifier
from tests.support import free_port, new_id

SECRET = "cli-secret-0123456789abcdef-0123456789"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "operations", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=180,
    )


def test_token_mints_a_verifiable_admin_token() -> None:
    result = run(
        "token",
        "--user",
        "alice",
        "--role",
        "admin",
        "--ttl",
        "120",
        env={"OPERATIONS_JWT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    verified = asyncio.run(TokenVerifier(SECRET).verify(result.stdout.strip()))
    assert verified.principal.user_id == "alice" and verified.principal.is_admin
    assert 100 < verified.expires_at - time.time() <= 120


def minted(*claim_options: str, **env: str) -> dict[str, Any]:
    args = ["token", "--user", "alice"]
    for option in claim_options:
        args += ["--claim", option]
    result = run(*args, env={"OPERATIONS_JWT_SECRET": SECRET, **env})
    assert result.returncode == 0, result.stderr
    claims: dict[str, Any] = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    return claims


def test_token_claims_shape_a_keycloak_like_token() -> None:
    claims = minted(
        'realm_access.roles=["admin","offline_access"]',
        "realm_access.flag=true",
        "azp=pacco-web",
        "resource_access.operations.roles=ops",
        "level=3",
        'scope="7"',
    )
    assert claims["realm_access"] == {"roles": ["admin", "offline_access"], "flag": True}
    assert claims["resource_access"] == {"operations": {"roles": "ops"}}
    assert (claims["azp"], claims["level"], claims["scope"]) == ("pacco-web", 3, "7")
    assert claims["sub"] == "alice"
    verifier = TokenVerifier(SECRET, role_claim="realm_access.roles")
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert asyncio.run(verifier.verify(token)).principal.is_admin


def test_token_claims_that_are_not_json_are_strings() -> None:
    claims = minted("note=not json {", "empty=", "url=https://id.example/a=b")
    assert claims["note"] == "not json {"
    assert claims["empty"] == ""
    assert claims["url"] == "https://id.example/a=b"


def test_a_claim_may_replace_a_standard_one() -> None:
    assert minted("iss=https://id.example/realms/pacco")["iss"] == "https://id.example/realms/pacco"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("novalue",), "KEY=VALUE"),
        (("=x",), "KEY=VALUE"),
        (("a..b=1",), "KEY=VALUE"),
        (("a=1", "a.b=2"), "already a value"),
        (("a.b=1", "a.b=2"), "more than once"),
    ],
)
def test_bad_claims_are_refused(options: tuple[str, ...], message: str) -> None:
    args = ["token", "--user", "alice"]
    for option in options:
        args += ["--claim", option]
    result = run(*args, env={"OPERATIONS_JWT_SECRET": SECRET})
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == ""


def test_token_without_a_secret_beside_a_jwks_url_says_why() -> None:
    jwks = "https://id.example/realms/pacco/protocol/openid-connect/certs"
    result = run(
        "token",
        "--user",
        "alice",
        env={"OPERATIONS_JWT_SECRET": "", "OPERATIONS_JWT_JWKS_URL": jwks},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "OPERATIONS_JWT_SECRET" in result.stderr and "identity provider" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("token", "--us", "alice"),
        ("demo-services", "--latency", "400"),
        ("demo-orders", "--ev", "1"),
        ("bench", "--mess", "10"),
    ],
)
def test_abbreviated_options_are_refused(args: tuple[str, ...]) -> None:
    result = run(*args, env={"OPERATIONS_JWT_SECRET": SECRET})
    assert result.returncode == 2, result.stdout
    assert "unrecognized arguments" in result.stderr or "required" in result.stderr
    assert args[1] in result.stderr


def test_a_bad_setting_stops_start_up_naming_the_variable() -> None:
    for variable, value in [
        ("OPERATIONS_PORT", "eighty"),
        ("OPERATIONS_ANONYMOUS_READS", "maybe"),
        ("OPERATIONS_MESSAGES_FILE", "/nonexistent/messages.json"),
        ("OPERATIONS_AMQP_URL", "http://localhost"),
        ("OPERATIONS_QUEUE_TYPE", "stream"),
    ]:
        result = run("serve", env={variable: value})
        assert result.returncode == 2, (variable, result.stderr)
        assert variable in result.stderr


def test_a_broken_catalogue_stops_start_up(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    catalogue = tmp_path / "messages.json"
    catalogue.write_text('{"orders": {"commands": ["x"]}}')
    result = run("serve", env={"OPERATIONS_MESSAGES_FILE": str(catalogue)})
    assert result.returncode == 2
    assert "exchange" in result.stderr


def test_serve_runs_as_a_process(servers: tuple[str, str]) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OPERATIONS_AMQP_URL": servers[0],
        "OPERATIONS_REDIS_URL": servers[1],
        "OPERATIONS_PORT": str(port),
        "OPERATIONS_QUEUE": f"operations-cli-{port}",
        "OPERATIONS_KEY_PREFIX": f"cli-{port}",
        "OPERATIONS_JWT_SECRET": SECRET,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "operations", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            assert process.poll() is None, "the service exited"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        asyncio.run(_delete_queue(servers[0], env["OPERATIONS_QUEUE"]))
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert '"level":"info"' in output  # JSON log lines when not on a terminal


async def _delete_queue(url: str, name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection, connection.channel() as channel:
        await channel.queue_delete(name)
        await channel.queue_delete(f"{name}.dead-letter")


def _small_bench(
    servers: tuple[str, str], *options: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """A small end-to-end bench run, to keep the benchmark working: its output and the figures
    of its JSON line, which must come last."""
    result = run(
        "bench",
        *("--clients", "5", "--seconds", "0.4", "--soak", "300", "--memory-operations", "300"),
        *options,
        env={
            "OPERATIONS_AMQP_URL": servers[0],
            "OPERATIONS_REDIS_URL": servers[1],
            "OPERATIONS_JWT_SECRET": SECRET,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bench_runs_end_to_end_and_prints_its_json_line_last(servers: tuple[str, str]) -> None:
    """Its figures are not judged here, only that they are all there."""
    result, figures = _small_bench(servers, "--messages", "60")
    for key in (
        "bare_rate",
        "bare_multiack_rate",
        "baseline_rate",
        "store_rate",
        "service_rate",
        "ratio",
        "ratio_multiack",
        "service_rate_sio_client",
        "ratio_sio_client",
        "p50_ms",
        "p99_ms",
        "p50_ms_500",
        "p99_ms_1000",
        "kib_per_client",
        "soak_growth_pct",
        "redis_bytes_per_operation",
        "index_members_after_expiry",
        "dead_members_after_expiry",
        "live_operations_after_expiry",
    ):
        assert isinstance(figures[key], int | float), key
    assert figures["bare_rate"] > 0 and figures["service_rate"] > 0
    assert figures["service_rate_sio_client"] > 0
    assert "service (sio client)" in result.stdout
    assert figures["amqp_bulk_frames"] is True


@pytest.mark.slow
def test_bench_with_tracing_exports_the_service_spans_to_its_sink(
    servers: tuple[str, str],
) -> None:
    """``--tracing``: the service processes export a span per message to the bench's own OTLP
    sink, which counts what it was sent; the JSON line stays last and says so."""
    result, figures = _small_bench(servers, "--messages", "200", "--rounds", "1", "--tracing")
    assert figures["tracing"] is True and figures["service_rate"] > 0
    assert figures["otlp_export_requests"] > 0
    assert "OTLP sink:" in result.stdout
    assert "AMQP frames read in bulk: yes" in result.stdout


@pytest.mark.slow
def test_bench_measures_redis_memory_alone_and_soaks_it(servers: tuple[str, str]) -> None:
    env = {"OPERATIONS_REDIS_URL": servers[1], "OPERATIONS_SWEEP_SECONDS": "1"}
    result = run("bench", "--memory", "--memory-operations", "400", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert 300 < figures["redis_bytes_per_operation"] < 10_000
    # After the burst expired, the indexes hold the trickle that still lives, not the burst.
    assert figures["index_members_after_expiry"] < 600  # the burst alone made 1,200
    assert figures["live_operations_after_expiry"] > 0
    soaked = run("bench", "--memory-soak", "3", env=env)
    assert soaked.returncode == 0, soaked.stdout + soaked.stderr
    last = json.loads(soaked.stdout.strip().splitlines()[-1])
    assert last["soak_seconds"] == 3 and last["live_operations_end"] > 0
    assert "too short to show flat memory" in soaked.stdout
    refused = run("bench", "--memory", "--memory-operations", "0", env=env)
    assert refused.returncode == 2 and "--memory-operations" in refused.stderr


async def test_the_bench_probe_is_a_real_socketio_client(
    service: Any, publisher: Any, token: Any
) -> None:
    """The lean client the throughput figure uses: refused without a valid token, then given
    its user's pushes (and no one else's), decoded from the wire like any Socket.IO client."""
    from operations.bench.probe import Probe, ProbeRefused

    refused = Probe(service.url)
    with pytest.raises(ProbeRefused):
        await refused.connect("not-a-token")

    probe = Probe(service.url)
    probe.expected = 2
    await probe.connect(token("probe-user"))
    first, second = new_id(), new_id()
    await publisher.publish("change_customer_state", first, user="probe-user")
    await publisher.publish("change_customer_state", second, user="probe-user")
    await publisher.publish("change_customer_state", new_id(), user="someone-else")
    await asyncio.wait_for(probe.complete.wait(), timeout=15)
    assert set(probe.arrived) == {str(uuid.UUID(first)), str(uuid.UUID(second))}
    await probe.close()


def test_every_command_the_parser_lists_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/install-check.sh runs `--help` for each name commands() gives; the list comes from
    the parser itself, so a new command is checked without anyone adding it."""
    from operations.cli import commands, main

    names = commands()
    assert {"serve", "token", "bench", "demo-services", "demo-orders"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert f"usage: operations {name}" in capsys.readouterr().out
