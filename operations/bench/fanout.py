"""``operations bench --fanout``: one service process pushing a steady stream of changes to
thousands of connected users and a few admins, with connection churn alongside.

One ``operations serve`` process (sagas off, as the bench's other service runs). The users and
admins connect from client processes of their own (:mod:`operations.bench.crowd`, one per core at
least), each user with a token of its own ``sub``, the admins with the admin role. Then the bench
publishes ``rate`` changes a second for ``seconds``: each operation's command (pending) and then
its event (completed), for an operation owned by a user picked at random. It notes when it sent
each change, and gives the list to the client processes at the end; they note when each change
reached each client, and count what each client was due (its user's changes, or all of them for
an admin) and what it got. Meanwhile one more client process (its handshakes apart from the
measured clients) connects and disconnects ``churn`` clients of those users a second.

Figures: the share delivered, p50 and p99 latency from publish to receipt for users and admins,
the service's RSS growth per connected client, the CPU each side used (``/proc`` for the service,
``getrusage`` in each client process), its garbage collector's pauses, and its RSS before the
churn, at its end and after a settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import sys
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
import orjson
import redis.asyncio as aioredis

from operations.amqp.catalogue import Catalogue
from operations.amqp.topology import declare_queue
from operations.bench import crowd, drain, pauses, push, traffic
from operations.bench.crowd import raise_file_limit
from operations.settings import DEV_JWT_SECRET, Settings

# Descriptors a process needs besides its clients: Redis, RabbitMQ, the listening socket, ...
SPARE_FILES = 256
CONNECTED_SETTLE_SECONDS = 2.0
SETTLE_SECONDS = 5.0
# Changes still arriving are waited for; none for this long, the rest are counted lost.
DELIVERY_WAIT_SECONDS = 10.0


@dataclass
class ClientProcess:
    process: asyncio.subprocess.Process
    users: list[int]
    admins: int = 0

    async def say(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps(message) + b"\n")
        await self.process.stdin.drain()

    async def hear(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"client process {self.process.pid} ended early")
        heard: dict[str, Any] = orjson.loads(line)
        return heard


async def run(
    settings: Settings,
    users: int = 15_000,
    admins: int = 10,
    seconds: float = 60.0,
    churn: float = 200.0,
    rate: int = 1_000,
    profile: str | None = None,
) -> int:
    if min(users, admins, rate) < 1 or seconds <= 0 or churn < 0:
        raise SystemExit("operations bench: the fan-out's counts and seconds must be positive")
    figures = await measure(settings, users, admins, seconds, churn, rate, profile)
    print(orjson.dumps(figures).decode())
    return 0


def fit_file_limit(users: int, admins: int, churn: float) -> tuple[int, int]:
    """The users the service process can hold within its open-file limit, and that limit; says
    so, and lowers the count, when the hard limit is below what they need."""
    limit = raise_file_limit()
    in_flight = math.ceil(churn * (crowd.CHURN_DWELL_SECONDS + 1))
    needed = users + admins + in_flight + SPARE_FILES
    if needed <= limit:
        print(f"open files: {limit} allowed per process, {needed} needed by the service")
        return users, limit
    fitted = max(0, limit - admins - in_flight - SPARE_FILES)
    print(
        f"open files: the hard limit is {limit} per process (ulimit -Hn), below the {needed}"
        f" that {users} users, {admins} admins and the churn need in the service process:"
        f" lowering the users to {fitted}"
    )
    if fitted < 1:
        raise SystemExit("operations bench: too few open files allowed for the fan-out")
    return fitted, limit


async def measure(
    settings: Settings,
    users: int,
    admins: int,
    seconds: float,
    churn: float,
    rate: int,
    profile: str | None = None,
) -> dict[str, Any]:
    asked = users
    users, limit = fit_file_limit(users, admins, churn)
    run_id = uuid.uuid4().hex[:8]
    settings = replace(
        settings,
        queue=f"operations-bench-fanout-{run_id}",
        key_prefix=f"bench-fanout-{run_id}",
        jwt_secret=settings.jwt_secret or DEV_JWT_SECRET,
        jwt_jwks_url=None,
    )
    catalogue = Catalogue.load(settings.messages_file)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        async with connection.channel() as channel:
            await declare_queue(channel, catalogue.bindings, settings.queue)
        # With thousands of clients the service takes a while to stop (python-socketio's
        # disconnect looks through every room), under the profiler minutes.
        stop_seconds = 900.0 if profile else 120.0
        async with push.service_process(settings, _free_port(), profile, stop_seconds) as service:
            return await _fan_out(
                settings, service, connection, (asked, users, admins), seconds, churn, rate, limit
            )
    finally:
        async with connection.channel() as channel:
            await channel.queue_delete(settings.queue)
            await channel.queue_delete(settings.dead_letter_queue)
        await drain.delete_keys(redis, f"{settings.key_prefix}:*")
        await redis.aclose()
        await connection.close()


async def _fan_out(
    settings: Settings,
    service: push.ServiceProcess,
    connection: aio_pika.abc.AbstractRobustConnection,
    counts: tuple[int, int, int],
    seconds: float,
    churn: float,
    rate: int,
    limit: int,
) -> dict[str, Any]:
    asked, users, admins = counts
    clients = users + admins
    processes = max(os.cpu_count() or 1, math.ceil(clients / max(1, limit - 2 * SPARE_FILES)))
    processes = min(processes, clients)
    await asyncio.sleep(1.0)
    rss_idle = service.rss_kib()
    print(f"connecting {users} users and {admins} admins from {processes} client processes ...")
    started = time.monotonic()
    crowds = await _start_crowds(settings, service.url, users, admins, churn, processes)
    try:
        answers = await asyncio.gather(*(group.hear() for group in crowds))
        connect_seconds = time.monotonic() - started
        for group, answer in zip(crowds, answers, strict=True):
            group.users, group.admins = answer["users"], answer["admins"]
        connected = [user for group in crowds for user in group.users]
        admins_connected = sum(group.admins for group in crowds)
        failed = sum(answer["failed"] for answer in answers)
        print(
            f"connected {len(connected)} users and {admins_connected} admins in"
            f" {connect_seconds:.1f} s ({failed} failed)"
        )
        if not connected:
            raise RuntimeError("no user connected")
        await asyncio.sleep(CONNECTED_SETTLE_SECONDS)
        rss_connected = service.rss_kib()
        print(f"publishing {rate} changes a second for {seconds:g} s, churn {churn:g}/s ...")
        service_cpu, wall = _cpu_seconds(service.process.pid), time.monotonic()
        waited = _runqueue_seconds(service.process.pid)
        paused = await pauses.read(service.url)
        for group in crowds:
            await group.say({"go": True})
        peak = _Peak(service)
        sampling = asyncio.create_task(peak.sample())
        changes, publish_seconds = await _publish(connection, connected, rate, seconds)
        # As the bench's latency runs: the first changes wake the service's paths from idle.
        warm_up = min(len(changes) // 10, rate // 2)
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        for group in crowds:
            await group.say({"changes": changes, "wait": DELIVERY_WAIT_SECONDS, "warm_up": warm_up})
        results = await asyncio.gather(*(group.hear() for group in crowds))
        paused_figures = (await pauses.read(service.url)).since(paused)
        service_cpu = _cpu_seconds(service.process.pid) - service_cpu
        waited = _runqueue_seconds(service.process.pid) - waited
        wall = time.monotonic() - wall
        rss_end = service.rss_kib()
        print(f"churn over; settling for {SETTLE_SECONDS:g} s ...")
        await asyncio.sleep(SETTLE_SECONDS)
        rss_after = service.rss_kib()
    finally:
        await _end_crowds(crowds)

    users_tally, admins_tally = crowd.merged(results, "users"), crowd.merged(results, "admins")
    expected = users_tally["expected"] + admins_tally["expected"]
    delivered = users_tally["delivered"] + admins_tally["delivered"]
    client_cpu = sum(result["cpu_seconds"] for result in results)
    figures: dict[str, Any] = {
        "fanout_users_asked": asked,
        "fanout_users": len(connected),
        "fanout_admins": admins_connected,
        "fanout_connect_failed": failed,
        "fanout_connect_seconds": round(connect_seconds, 1),
        "fanout_open_files_limit": limit,
        "fanout_rate": rate,
        "fanout_seconds": seconds,
        "fanout_changes": len(changes),
        "fanout_warm_up_changes": warm_up,
        "fanout_publish_rate": round(len(changes) / publish_seconds, 1),
        "fanout_expected": expected,
        "fanout_delivered": delivered,
        "fanout_delivered_pct": round(100 * delivered / expected, 3) if expected else 0.0,
        "fanout_duplicates": users_tally["duplicates"] + admins_tally["duplicates"],
        "fanout_misrouted": users_tally["misrouted"] + admins_tally["misrouted"],
        "fanout_p50_ms_users": crowd.percentile(users_tally["buckets"], 0.50),
        "fanout_p99_ms_users": crowd.percentile(users_tally["buckets"], 0.99),
        "fanout_p50_ms_admins": crowd.percentile(admins_tally["buckets"], 0.50),
        "fanout_p99_ms_admins": crowd.percentile(admins_tally["buckets"], 0.99),
        "fanout_rss_kib_per_client": round(
            (rss_connected - rss_idle) / (len(connected) + admins_connected), 1
        ),
        "fanout_rss_kib_connected": rss_connected,
        "fanout_rss_kib_peak": peak.highest,
        "fanout_client_processes": len(crowds),
        "fanout_client_rss_kib": sum(result["rss_kib"] for result in results),
        "fanout_cores_service": round(service_cpu / wall, 2),
        "fanout_cores_clients": round(client_cpu / wall, 2),
        "fanout_service_runqueue_pct": round(100 * waited / wall, 1),
        "fanout_churn_per_s": churn,
        "fanout_churn_cycles": sum(result["churn_cycles"] for result in results),
        "fanout_churn_failed": sum(result["churn_failed"] for result in results),
        "fanout_churn_lost": expected - delivered,
        "fanout_churn_rss_kib_before": rss_connected,
        "fanout_churn_rss_kib_end": rss_end,
        "fanout_churn_rss_kib_after": rss_after,
        **paused_figures,
    }
    _print(figures, wall)
    return figures


async def _start_crowds(
    settings: Settings, url: str, users: int, admins: int, churn: float, processes: int
) -> list[ClientProcess]:
    """The client processes, each with a share of the users and admins, from an address of its
    own on the loopback (so that the clients' ports do not run out)."""
    env = {**os.environ, "OPERATIONS_JWT_SECRET": settings.signing_secret()}
    crowds = []
    # The churn comes from a process of its own: its handshakes do not hold up the measured
    # clients' reading, so their latency is the service's.
    shares = [
        (list(range(n, users, processes)), list(range(n, admins, processes)), 0.0)
        for n in range(processes)
    ]
    if churn > 0:
        shares.append(([], [], churn))
    for n, (share, admin_share, churning) in enumerate(shares):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "operations.bench.crowd",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=push._die_with_parent,
            limit=1 << 28,
        )
        group = ClientProcess(process, share)
        crowds.append(group)
        await group.say(
            {
                "url": url,
                "users": share,
                "admins": admin_share,
                "churn": churning,
                "churn_users": list(range(users)) if churning else [],
                "address": f"127.0.0.{2 + n % 250}",
            }
        )
    return crowds


async def _end_crowds(crowds: list[ClientProcess]) -> None:
    for group in crowds:
        if group.process.stdin is not None:
            group.process.stdin.close()
    for group in crowds:
        try:
            await asyncio.wait_for(group.process.wait(), timeout=60)
        except TimeoutError:
            group.process.kill()
            await group.process.wait()


async def _publish(
    connection: aio_pika.abc.AbstractRobustConnection, users: list[int], rate: int, seconds: float
) -> tuple[list[tuple[int, float]], float]:
    """``rate`` changes a second: operation n's command is change 2n, its event change 2n + 1;
    each operation belongs to a user picked at random. Returns (owner, time sent) by change."""
    total = max(2, int(rate * seconds) // 2 * 2)
    tag = uuid.uuid4().hex[:8]
    pick = random.Random(27)
    changes: list[tuple[int, float]] = []
    async with connection.channel(publisher_confirms=False) as channel:
        targets = await traffic.exchanges(channel)
        started = time.perf_counter()
        owner = 0
        for index in range(total):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if index % 2 == 0:
                owner = pick.choice(users)
            operation = f"{tag}-0000-4000-8000-{index // 2:012x}"
            exchange, name, body = traffic.message(index % 2, operation, crowd.user_name(owner))
            changes.append((owner, time.time()))
            await targets[exchange].publish(body, routing_key=name)
        elapsed = time.perf_counter() - started
    return changes, elapsed


class _Peak:
    """The service's highest RSS, sampled every half second."""

    def __init__(self, service: push.ServiceProcess) -> None:
        self.service = service
        self.highest = service.rss_kib()

    async def sample(self) -> None:
        while True:
            self.highest = max(self.highest, self.service.rss_kib())
            await asyncio.sleep(0.5)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, from ``/proc``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runqueue_seconds(pid: int) -> float:
    """How long the process's main thread has waited, runnable, for a CPU (``schedstat``): on a
    shared machine, the time other processes took from the service."""
    with open(f"/proc/{pid}/schedstat", encoding="ascii") as schedstat:
        return int(schedstat.read().split()[1]) / 1e9


def _print(figures: dict[str, Any], wall: float) -> None:
    print()
    print(f"{'clients':<8} {'count':>6} {'delivered %':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, count in (("users", figures["fanout_users"]), ("admins", figures["fanout_admins"])):
        print(
            f"{kind:<8} {count:>6} {figures['fanout_delivered_pct']:>12.3f}"
            f" {figures[f'fanout_p50_ms_{kind}']:>8.1f} {figures[f'fanout_p99_ms_{kind}']:>8.1f}"
        )
    print(
        f"{figures['fanout_changes']} changes at {figures['fanout_publish_rate']:.0f}/s;"
        f" {figures['fanout_delivered']} of {figures['fanout_expected']} deliveries"
        f" ({figures['fanout_duplicates']} doubled, {figures['fanout_misrouted']} misrouted)"
    )
    print(
        f"service RSS {figures['fanout_rss_kib_per_client']:.1f} KiB per connected client;"
        f" cores over {wall:.0f} s: service {figures['fanout_cores_service']:.2f},"
        f" {figures['fanout_client_processes']} client processes"
        f" {figures['fanout_cores_clients']:.2f}"
        f" (their RSS {figures['fanout_client_rss_kib']} KiB in all); the service waited for a"
        f" CPU {figures['fanout_service_runqueue_pct']:.0f} % of the time"
    )
    print(
        f"churn {figures['fanout_churn_per_s']:g}/s: {figures['fanout_churn_cycles']} clients came"
        f" and went ({figures['fanout_churn_failed']} failed), {figures['fanout_churn_lost']}"
        f" changes lost; service RSS {figures['fanout_churn_rss_kib_before']} KiB before,"
        f" {figures['fanout_churn_rss_kib_end']} at its end,"
        f" {figures['fanout_churn_rss_kib_after']} after {SETTLE_SECONDS:g} s"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
