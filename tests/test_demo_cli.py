"""``operations demo-services`` as a process (its options, SIGTERM, an explicit latency) and
``make run`` (scripts/run.sh) starting the demo with commands the CLI accepts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from operations.auth.tokens import TokenVerifier
from tests.api import bearer
from tests.conftest import ROOT, SECRET
from tests.demo_support import CUSTOMER, ORDER, Replies, simulated
from tests.support import Publisher, RunningService, eventually, new_id, run_operations


async def run_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "operations",
        "demo-services",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--fail", "nope=2"), "'nope' is not a simulated command"),
        (("--fail", "reserve_resource=2"), "the rate must be a number from 0 to 1"),
        (("--latency-ms", "-1"), "--latency-ms must not be negative"),
    ],
)
async def test_the_command_line_refuses_bad_options(args: tuple[str, ...], says: str) -> None:
    process = await run_cli(*args)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert says in stderr.decode()


async def test_the_command_line_runs_until_sigterm(
    amqp_url: str, connection: AbstractRobustConnection
) -> None:
    process = await run_cli("--fail", "reserve_resource=0.5", env={"OPERATIONS_AMQP_URL": amqp_url})
    assert process.stderr is not None
    try:
        started = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), timeout=30)
        await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    line = orjson.loads(started)
    assert line["level"] == "info"
    assert "orders (demo.orders)" in line["message"]
    assert "latency 50 ms" in line["message"]
    assert "reserve_resource=0.5" in line["message"]
    assert process.returncode == 0, rest.decode()
    assert b"stopping the simulated services" in rest


@contextlib.asynccontextmanager
async def cli_running(
    amqp_url: str, *args: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    """``operations demo-services`` as a process, with its start-up log line; stopped by SIGTERM
    (and killed by its PID if it does not stop)."""
    process = await run_cli(*args, env={"OPERATIONS_AMQP_URL": amqp_url})
    assert process.stderr is not None
    try:
        started = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        yield process, orjson.loads(started)
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), timeout=30)
        await asyncio.wait_for(process.wait(), timeout=30)
        assert process.returncode == 0, rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_an_explicit_latency_delays_each_reply_by_about_that_much(
    amqp_url: str, connection: AbstractRobustConnection, publisher: Publisher, replies: Replies
) -> None:
    latency = 1.0
    took: list[float] = []
    async with cli_running(amqp_url, "--latency-ms", "1000") as (_, started):
        assert "latency 1000 ms" in started["message"]
        for _ in range(3):
            op = new_id()
            begun = time.monotonic()
            await publisher.publish(
                "create_order", op, body={"orderId": ORDER, "customerId": CUSTOMER}
            )
            answered = await replies.one()
            took.append(time.monotonic() - begun)
            assert (answered.routing_key, answered.correlation_id) == ("order_created", op)
    assert min(took) >= latency - 0.005, took  # every reply waited the latency at least
    assert min(took) < 1.5 * latency, took  # ... once, not twice or in seconds
    assert max(took) < latency + 5, took


RECORDER = '''#!{python}
"""Stands in for {name} under a copy of scripts/run.sh and records how it was called."""
import json, os, sys

name, args, calls = {name!r}, sys.argv[1:], os.environ["RUN_SH_CALLS"]
ready = False
if name == "python" and not os.environ.get("RUN_SH_SERVE_DIES"):
    # The readiness probe: ready once serve has started. It looks before it records itself, so
    # a ready probe's record always comes after serve's.
    with open(calls) as lines:
        ready = any(json.loads(line)["args"] == ["serve"] for line in lines)
with open(calls, "a") as out:
    seen = {{"name": name, "args": args, "pid": os.getpid(), "ready": ready}}
    seen["amqp"] = os.environ.get("OPERATIONS_AMQP_URL")
    seen["redis"] = os.environ.get("OPERATIONS_REDIS_URL")
    out.write(json.dumps(seen) + "\\n")
if name == "python":
    sys.exit(0 if ready else 1)
if name == "operations" and args[0] == "token":
    print("token-for-" + args[args.index("--user") + 1])
elif name == "operations" and args == ["serve"] and os.environ.get("RUN_SH_SERVE_DIES"):
    print("serve logged before it died", file=sys.stderr)
    sys.exit(3)
elif name == "operations":
    # What each command writes, to see where run.sh sends it.
    print(args[0] + " wrote to standard error", file=sys.stderr, flush=True)
    print(args[0] + " wrote to standard output", flush=True)
    ends = os.environ.get("RUN_SH_SERVE_ENDS") if args == ["serve"] else None
    os.execv({sleep!r}, ["sleep", ends or "90"])
'''


def stub_run_sh(tree: Path) -> Path:
    """A copy of scripts/run.sh whose setup, services and ``.venv`` commands are recorders."""
    (tree / "scripts").mkdir(parents=True)
    (tree / ".venv" / "bin").mkdir(parents=True)
    run_sh = tree / "scripts" / "run.sh"
    shutil.copy2(ROOT / "scripts" / "run.sh", run_sh)
    sleep = shutil.which("sleep")
    assert sleep is not None
    for path in (
        "scripts/setup.sh",
        "scripts/services.sh",
        ".venv/bin/operations",
        ".venv/bin/python",
    ):
        stub = tree / path
        name = stub.name.removesuffix(".sh")
        stub.write_text(RECORDER.format(python=sys.executable, name=name, sleep=sleep))
        stub.chmod(0o755)
    return run_sh


def flag(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


@pytest.mark.slow
async def test_run_sh_starts_the_demo_with_commands_the_cli_accepts(
    tmp_path: Path,
    amqp_url: str,
    connection: AbstractRobustConnection,
    service: RunningService,
    token: Any,
) -> None:
    """``make run`` (scripts/run.sh), with its setup, broker and ``operations`` commands recorded
    instead of run: it starts the services, then serve, waits for it, then demo-services and
    demo-orders, points them all at the started broker and Redis, prints working links for the
    user whose orders demo-orders places, and stops everything on SIGTERM. Then each recorded
    command line is run for real, so a flag the CLI does not accept fails here."""
    calls = tmp_path / "calls.jsonl"
    run_sh = stub_run_sh(tmp_path / "tree")
    drop = ("OPERATIONS_AMQP_URL", "OPERATIONS_REDIS_URL", "OPERATIONS_HOST", "OPERATIONS_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DEMO_")}
    env |= {"RUN_SH_CALLS": str(calls), "OPERATIONS_AMQP_PORT": "5999"}
    env |= {"OPERATIONS_REDIS_PORT": "6999"}
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(run_sh),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    banner: list[str] = []
    try:
        while not banner or "Ctrl-C to stop" not in banner[-1]:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
            assert line, f"run.sh ended early: {''.join(banner)}"
            banner.append(line.decode())

        async def demos_started() -> bool:
            # The demo commands run in the background: the banner can come before they start.
            text = calls.read_text() if calls.exists() else ""
            return '["demo-services"' in text and '["demo-orders"' in text

        await eventually(demos_started, "run.sh's demo commands to start", timeout=30)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130  # its INT/TERM trap

    recorded = [orjson.loads(line) for line in calls.read_bytes().splitlines()]
    steps = [(c["name"], c["args"][0] if c["args"] else "") for c in recorded]
    assert steps[:2] == [("setup", ""), ("services", "start")]
    assert steps[-1] == ("services", "stop")
    commands = {c["args"][0]: c for c in recorded if c["name"] == "operations"}
    assert set(commands) == {"serve", "demo-services", "demo-orders", "token"}
    probed = next(index for index, call in enumerate(recorded) if call["ready"])
    assert steps.index(("operations", "serve")) < probed, "it never waited for /ready"
    assert steps.index(("operations", "demo-services")) > probed
    assert steps.index(("operations", "demo-orders")) > probed
    for command in ("serve", "demo-services", "demo-orders"):
        assert commands[command]["amqp"] == "amqp://guest:guest@127.0.0.1:5999/"
        assert commands[command]["redis"] == "redis://127.0.0.1:6999/0"
    assert commands["serve"]["args"] == ["serve"]
    pids = [commands[c]["pid"] for c in ("serve", "demo-services", "demo-orders")]

    async def all_stopped() -> bool:
        return not any(alive(pid) for pid in pids)

    await eventually(all_stopped, "run.sh to stop what it started", timeout=10)

    tokens = [c["args"] for c in recorded if c["args"][:1] == ["token"]]
    orders_args = commands["demo-orders"]["args"][1:]
    user = flag(orders_args, "--user", "demo-user")
    admins = [flag(args, "--user", "") for args in tokens if flag(args, "--role", "") == "admin"]
    assert admins, f"no admin token for the dashboard link: {tokens}"
    text = "".join(banner)
    base = "http://127.0.0.1:5005"
    assert f"{base}/live/#token=token-for-{user}" in text, text
    assert f"{base}/dashboard/#token=token-for-{admins[0]}" in text, text
    async with httpx.AsyncClient(base_url=service.url) as http:
        for page in ("/live/", "/dashboard/"):
            assert (await http.get(page)).status_code == 200, page

        for args in tokens:
            code, minted, errors = await run_operations(
                *args, env={"OPERATIONS_JWT_SECRET": SECRET}
            )
            assert code == 0, errors
            verified = await TokenVerifier(SECRET).verify(minted.strip())
            assert verified.principal.user_id == flag(args, "--user", "")
            assert verified.principal.is_admin == (flag(args, "--role", "") == "admin")

        services_args = commands["demo-services"]["args"][1:]
        async with cli_running(amqp_url, *services_args) as (_, started):
            latency = flag(services_args, "--latency-ms", "50")
            assert f"latency {latency} ms" in started["message"], started

        where = {"OPERATIONS_HOST": "127.0.0.1", "OPERATIONS_PORT": str(service.port)}
        async with simulated(amqp_url):
            code, said, errors = await run_operations(
                "demo-orders",
                *orders_args,
                *("--count", "1", "--every", "0.1"),
                env=where | {"OPERATIONS_JWT_SECRET": SECRET},
            )
        assert code == 0 and "placed" in errors, errors
        listed = await http.get("/operations", headers=bearer(token(user)))
        assert [item["state"] for item in listed.json()["items"]] == ["completed"], listed.json()
        assert len(said.splitlines()) == 1 and " completed in " in said, said


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_run_sh_stops_when_the_service_never_becomes_ready(tmp_path: Path) -> None:
    """If serve dies before /ready answers, run.sh says so, starts no demo, stops the servers it
    started and exits with an error, instead of carrying on without a service."""
    calls = tmp_path / "calls.jsonl"
    run_sh = stub_run_sh(tmp_path / "tree")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPERATIONS_", "DEMO_"))}
    env |= {"RUN_SH_CALLS": str(calls), "RUN_SH_SERVE_DIES": "1"}
    process = await asyncio.create_subprocess_exec(
        "bash", str(run_sh), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1, stderr.decode()
    said = stderr.decode()
    assert "did not become ready" in said
    assert "The end of .run/dev/serve.log:\nserve logged before it died\n" in said, said
    recorded = [orjson.loads(line) for line in calls.read_text().splitlines()]
    steps = [(c["name"], c["args"][0] if c["args"] else "") for c in recorded]
    assert ("operations", "serve") in steps
    assert not {("operations", "demo-services"), ("operations", "demo-orders")} & set(steps)
    assert steps[-1] == ("services", "stop"), steps


class Written:
    """What a stream has written so far, read in the background."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        self.text = ""
        self.reading = asyncio.create_task(self.read(stream))

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self.text += chunk.decode()

    async def until(self, check: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        async def met() -> str | None:
            return self.text if check(self.text) else None

        return await eventually(met, what, timeout=timeout, every=0.05)


@contextlib.asynccontextmanager
async def run_sh_running(
    tmp_path: Path, settings: dict[str, str], stdin: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Written, Written]]:
    """The stubbed run.sh (see ``stub_run_sh``) with these variables, its standard output and
    error; stopped by SIGTERM (and killed if it does not stop) unless it has ended."""
    run_sh = stub_run_sh(tmp_path / "tree")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPERATIONS_", "DEMO_"))}
    env |= {"RUN_SH_CALLS": str(tmp_path / "calls.jsonl")} | settings
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(run_sh),
        env=env,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = Written(process.stdout), Written(process.stderr)
    try:
        yield process, out, err
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await asyncio.wait_for(asyncio.gather(out.reading, err.reading), timeout=30)


LINKS = "Press Enter for these links again, Ctrl-C to stop."


async def test_run_sh_writes_the_logs_to_files_and_shows_the_links_again_on_enter(
    tmp_path: Path,
) -> None:
    """The terminal gets where the logs are, the links, and demo-orders' standard output (its
    line per finished order); every process's log goes to its file in the run directory; and
    Enter brings the same links back."""
    run_dir = tmp_path / "run"
    settings = {"OPERATIONS_RUN_DIR": str(run_dir), "DEMO_LINKS_EVERY": "600"}
    async with run_sh_running(tmp_path, settings, asyncio.subprocess.PIPE) as (process, out, err):
        await err.until(lambda text: LINKS in text, "the links")
        await out.until(lambda text: "demo-orders wrote" in text, "demo-orders' output")
        assert process.stdin is not None
        process.stdin.write(b"\n")
        await process.stdin.drain()
        await err.until(lambda text: text.count(LINKS) == 2, "the links again after Enter")
    assert process.returncode == 130

    logs = [run_dir / name for name in ("serve.log", "demo-services.log", "demo-orders.log")]
    assert err.text.startswith("run: the logs go to " + ", ".join(map(str, logs)) + "\n"), err.text
    first, again = err.text.split("operations is running on ")[1:]
    assert first.strip() == again.strip(), err.text
    assert "/live/#token=token-for-demo-user" in first and "/dashboard/#token=" in first
    assert "logs:" in first and f"{run_dir}/serve.log" in first
    assert out.text == "demo-orders wrote to standard output\n", out.text
    assert "wrote to" not in err.text, err.text
    for log, command in zip(logs[:2], ("serve", "demo-services"), strict=True):
        written = log.read_text().splitlines()
        assert sorted(written) == [f"{command} wrote to standard {s}" for s in ("error", "output")]
    assert logs[2].read_text() == "demo-orders wrote to standard error\n"


async def test_run_sh_shows_the_links_every_few_minutes(tmp_path: Path) -> None:
    """Every DEMO_LINKS_EVERY seconds the links come back by themselves, also when standard
    input is closed (no Enter can come), and run.sh keeps running."""
    settings = {"DEMO_LINKS_EVERY": "1"}
    async with run_sh_running(tmp_path, settings, asyncio.subprocess.DEVNULL) as (process, _, err):
        await err.until(lambda text: text.count(LINKS) >= 3, "the links three times", timeout=20)
        assert process.returncode is None
    assert process.returncode == 130
    assert (tmp_path / "tree" / ".run" / "dev" / "serve.log").exists()


async def test_run_sh_shows_the_end_of_the_log_when_the_service_stops(tmp_path: Path) -> None:
    """If serve ends while the demo runs, run.sh says so with the end of its log, stops what it
    started and exits with an error."""
    settings = {"RUN_SH_SERVE_ENDS": "2", "DEMO_LINKS_EVERY": "600"}
    async with run_sh_running(tmp_path, settings, asyncio.subprocess.DEVNULL) as (process, _, err):
        await asyncio.wait_for(process.wait(), timeout=30)
    assert process.returncode == 1, err.text
    assert LINKS in err.text
    stopped = "run: the service stopped (exit status 0). The end of .run/dev/serve.log:\n"
    assert stopped + "serve wrote to standard error\n" in err.text, err.text
    recorded = [orjson.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert (recorded[-1]["name"], recorded[-1]["args"]) == ("services", ["stop"])
