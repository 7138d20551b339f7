"""``operations bench``: the service measured against ceilings taken in the same run.

Against the local RabbitMQ and Redis named by the settings, it measures:

- ``bare``: an aio-pika consumer that only acknowledges each of N pre-published messages, and
  ``bare multi-ack``, one that acknowledges every 64th with a multiple-ack (the ceilings);
- ``baseline``: the original .NET design (read, write, push, ack, one message at a time);
- ``store``: the service's consumer and pipeline, until all N operations are applied in Redis;
- ``service``: a separate ``operations serve`` process draining N messages until one connected
  Socket.IO client has received all N pushes (the full path);
- latency from publish to that client at fixed offered loads below saturation;
- the service process's memory per idle connected Socket.IO client;
- its RSS growth over a long soak, after warm-up;
- Redis memory per tracked operation, and what the indexes hold after a burst of operations has
  expired under steady traffic (:mod:`operations.bench.memory`).

It prints a table, then one JSON line, last, with a key for each figure. ``run_memory`` measures
the Redis memory figures alone, or soaks Redis under steady traffic for a given time.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import socket
import statistics
import uuid
from dataclasses import replace

import aio_pika
import orjson
import redis.asyncio as aioredis

from operations.amqp.catalogue import Catalogue
from operations.amqp.topology import declare_queue
from operations.bench import drain, memory, push, sink, traffic
from operations.settings import DEV_JWT_SECRET, Settings

LOADS = (500, 1000)
# After publishing, the broker is still writing the messages away for a moment.
SETTLE_SECONDS = 3.0


async def run(
    settings: Settings,
    messages: int,
    prefetch: int | None = None,
    clients: int = 1_000,
    latency_seconds: float = 5.0,
    soak_messages: int = 500_000,
    rounds: int = 2,
    memory_operations: int = 20_000,
    tracing: bool = False,
) -> int:
    """Prints the figures, their JSON line last. With ``tracing``, every service process exports
    a span per message over OTLP/HTTP to a local sink process (:mod:`operations.bench.sink`)."""
    measure = functools.partial(
        _run,
        settings,
        messages,
        prefetch,
        clients,
        latency_seconds,
        soak_messages,
        rounds,
        memory_operations,
    )
    if not tracing:
        figures = await measure()
    else:
        traced = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "operations"}
        async with sink.otlp_sink() as receiver:
            os.environ.update(traced, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
            try:
                figures = await measure()
            finally:
                for name in [*traced, "OTEL_EXPORTER_OTLP_ENDPOINT"]:
                    del os.environ[name]
        print(f"OTLP sink: {receiver.requests} export requests, {receiver.bytes} bytes")
        figures = {"tracing": True, **figures, "otlp_export_requests": receiver.requests}
    print(orjson.dumps(figures).decode())
    return 0


async def _run(
    settings: Settings,
    messages: int,
    prefetch: int | None,
    clients: int,
    latency_seconds: float,
    soak_messages: int,
    rounds: int,
    memory_operations: int,
) -> dict[str, float | int]:
    if min(messages, clients, soak_messages, rounds, memory_operations) < 1 or latency_seconds <= 0:
        raise SystemExit("operations bench: every count and --seconds must be positive")
    _raise_file_limit()
    run_id = uuid.uuid4().hex[:8]
    # The bench runs services of its own, with tokens of its own: never an identity provider's.
    settings = replace(
        settings,
        queue=f"operations-bench-{run_id}",
        key_prefix=f"bench-{run_id}",
        prefetch=prefetch or settings.prefetch,
        jwt_secret=settings.jwt_secret or DEV_JWT_SECRET,
        jwt_jwks_url=None,
    )
    secret = settings.signing_secret()

    def own(name: str) -> Settings:
        # Its own queue and keys: the same messages were already applied by the other runs.
        return replace(
            settings, queue=f"{settings.queue}-{name}", key_prefix=f"{settings.key_prefix}-{name}"
        )

    push_rounds = [own(f"push{n}") for n in range(rounds)]
    sio_settings = own("push-sio")
    catalogue = Catalogue.load(settings.messages_file)
    queues = {
        f"{name}{n}": f"operations-bench-{name}{n}-{run_id}"
        for name in ("bare", "multiack")
        for n in range(rounds)
    }
    queues["baseline"] = f"operations-bench-baseline-{run_id}"
    queues["store"] = settings.queue
    queues.update({f"push{n}": push.queue for n, push in enumerate(push_rounds)})
    queues["push-sio"] = sio_settings.queue
    services = [settings, *push_rounds, sio_settings]
    connection = await aio_pika.connect_robust(settings.amqp_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    bares: list[drain.Figure] = []
    multiacks: list[drain.Figure] = []
    pushes: list[tuple[drain.Figure, int]] = []
    try:
        async with connection.channel() as channel:
            for name in queues.values():
                await declare_queue(channel, catalogue.bindings, name)
        print(
            f"publishing {messages} messages to {len(queues)} identically bound queues ...",
            flush=True,
        )
        await traffic.publish(connection, messages)
        await asyncio.sleep(SETTLE_SECONDS)
        for n in range(rounds):
            # The ceilings and the full path in turns, so that a slow spell of the machine
            # does not fall on one of them only; each keeps its best round.
            print(f"round {n + 1} of {rounds}: bare, bare multi-ack, full path ...", flush=True)
            bares.append(
                await drain.bare(connection, queues[f"bare{n}"], messages, settings.prefetch)
            )
            multiacks.append(
                await drain.bare(
                    connection,
                    queues[f"multiack{n}"],
                    messages,
                    settings.prefetch,
                    multiple_ack=True,
                )
            )
            pushes.append(
                await push.drain_to_client(
                    push_rounds[n], connection, redis, messages, _free_port(), publish=False
                )
            )
        print("draining: service without push, baseline ...", flush=True)
        stored = await drain.service(settings, catalogue, redis, messages)
        baseline = await drain.baseline(
            settings, catalogue, connection, redis, queues["baseline"], messages
        )
        print("draining through a service process to python-socketio's own client ...", flush=True)
        pushed_sio, via_sync_sio = await push.drain_to_client(
            sio_settings, connection, redis, messages, _free_port(), publish=False, lean=False
        )
        # The drained copies go now: every message published from here on would be routed to
        # them as well, and the broker's work on them would weigh on the latency and the soak.
        await _delete_queues(
            connection, [name for name in queues.values() if name != push_rounds[0].queue]
        )
        latencies: dict[int, tuple[float, float]] = {}
        async with push.service_process(push_rounds[0], _free_port()) as process:
            for load in LOADS:
                print(f"latency at {load} msg/s for {latency_seconds:g} s ...", flush=True)
                latencies[load] = await push.latency(
                    process, connection, secret, load, latency_seconds
                )
            print(f"connecting {clients} idle Socket.IO clients ...", flush=True)
            kib = await push.memory_per_client(process, secret, clients)
            print(f"soak: {soak_messages} messages pushed to one client ...", flush=True)
            growth, warm_rss, end_rss = await push.soak(process, connection, secret, soak_messages)
        print("Redis memory per operation, and the indexes after expiry ...", flush=True)
        per_operation = await memory.bytes_per_operation(
            redis, f"{settings.key_prefix}-memory", memory_operations
        )
        after = await memory.steady(redis, f"{settings.key_prefix}-steady", memory_operations)
    finally:
        await _delete_queues(
            connection,
            [*queues.values(), *(service.dead_letter_queue for service in services)],
        )
        for service in services:
            await drain.delete_keys(redis, f"{service.key_prefix}:*")
        await redis.aclose()
        await connection.close()

    bare = _best(bares, "bare")
    multiack = _best(multiacks, "bare multi-ack")
    pushed, via_sync = max(pushes, key=lambda pushed: pushed[0].rate)
    rows = [bare, multiack, baseline, stored, pushed, pushed_sio]
    print()
    print(
        f"{'run':<22} {'messages':>9} {'seconds':>9} {'msg/s':>10}  {'/bare':>6} {'/multi-ack':>10}"
    )
    for figure in rows:
        print(
            f"{figure.name:<22} {figure.messages:>9} {figure.seconds:>9.3f} {figure.rate:>10.0f}"
            f"  {_ratio(figure, bare):>6.2f} {_ratio(figure, multiack):>10.2f}"
        )
    print(
        "(service = the full path: broker, envelope, state, Redis, push to one Socket.IO client,"
        f" a lean one; {via_sync} of its records reached the client in its sync;"
        f" sio client = the same with python-socketio's AsyncClient, {via_sync_sio} by sync)"
    )
    if rounds > 1:
        print(
            f"(bare, bare multi-ack and service: the best of {rounds} rounds taken in turns;"
            f" bare {_rates(bares)}, multi-ack {_rates(multiacks)},"
            f" service {_rates([figure for figure, _ in pushes])} msg/s)"
        )
    print()
    print(f"{'offered':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for load, (p50, p99) in latencies.items():
        print(f"{load:>6}/s   {p50:>8.2f} {p99:>8.2f}")
    print(f"\nRSS per idle connected client at {clients} clients: {kib:.1f} KiB")
    print(
        f"RSS over a {soak_messages}-message soak after warm-up: {warm_rss} KiB -> "
        f"{end_rss} KiB ({growth:+.2f} %)"
    )
    print(
        f"prefetch {settings.prefetch}, batch size {settings.batch_size}, {os.cpu_count()} cores,"
        f" AMQP frames read in bulk: {'yes' if settings.amqp_bulk_frames else 'no'}"
    )
    figures: dict[str, float | int] = {
        "messages": messages,
        "prefetch": settings.prefetch,
        "rounds": rounds,
        "amqp_bulk_frames": settings.amqp_bulk_frames,
        "bare_rate": round(bare.rate, 1),
        "bare_multiack_rate": round(multiack.rate, 1),
        "baseline_rate": round(baseline.rate, 1),
        "store_rate": round(stored.rate, 1),
        "service_rate": round(pushed.rate, 1),
        "ratio": round(_ratio(pushed, bare), 3),
        "ratio_multiack": round(_ratio(pushed, multiack), 3),
        "store_ratio": round(_ratio(stored, bare), 3),
        "baseline_ratio": round(_ratio(pushed, baseline), 3),
        "service_rate_sio_client": round(pushed_sio.rate, 1),
        "ratio_sio_client": round(_ratio(pushed_sio, bare), 3),
    }
    for load, (p50, p99) in latencies.items():
        figures[f"p50_ms_{load}"] = round(p50, 2)
        figures[f"p99_ms_{load}"] = round(p99, 2)
    figures["p50_ms"], figures["p99_ms"] = figures["p50_ms_1000"], figures["p99_ms_1000"]
    figures["clients"] = clients
    figures["kib_per_client"] = round(kib, 1)
    figures["soak_messages"] = soak_messages
    figures["soak_growth_pct"] = round(growth, 2)
    _print_memory(per_operation, after)
    figures.update(_memory_figures(per_operation, after))
    return figures


async def run_memory(
    settings: Settings, soak_seconds: float = 0.0, operations: int = 20_000
) -> int:
    """The Redis memory figures alone; with ``soak_seconds``, a steady soak of that length
    instead: 100 operations a second living 30 s, swept every ``OPERATIONS_SWEEP_SECONDS``,
    memory sampled every 10 s."""
    redis = aioredis.Redis.from_url(settings.redis_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        if soak_seconds > 0:
            print(f"soaking Redis for {soak_seconds:g} s: 100 operations/s, 30 s each ...")
            soaked = await memory.steady(
                redis,
                f"{prefix}-soak",
                burst=0,
                ttl=30,
                per_second=100,
                seconds=soak_seconds,
                sweep_every=settings.sweep_seconds,
                sample_every=10.0,
            )
            print(f"{'seconds':>8} {'used_memory':>12} {'members':>8}")
            for at, used, members in soaked.samples:
                print(f"{at:>8.0f} {used:>12} {members:>8}")
            # Growth over the second half: by then every operation of the first lifetime has
            # expired and been swept, so memory should be flat.
            # After two lifetimes every operation of the first has expired and been swept:
            # from then on, memory should be flat. Growth compares the means of the two halves
            # of that stretch (a sweep every few seconds makes single samples saw-toothed).
            warm = [used for at, used, _ in soaked.samples if at >= 60]
            if len(warm) < 4:
                print("(a soak shorter than about 100 s is too short to show flat memory)")
            half = len(warm) // 2
            growth = (
                (statistics.mean(warm[half:]) / statistics.mean(warm[:half]) - 1) * 100
                if half
                else 0.0
            )
            print(
                orjson.dumps(
                    {
                        "soak_seconds": soak_seconds,
                        "redis_used_memory_first": soaked.samples[0][1],
                        "redis_used_memory_last": soaked.samples[-1][1],
                        "redis_used_memory_min_warm": min(warm, default=0),
                        "redis_used_memory_max_warm": max(warm, default=0),
                        "redis_growth_pct": round(growth, 2),
                        "index_members_end": soaked.index_members,
                        "dead_members_end": soaked.dead_members,
                        "live_operations_end": soaked.live_operations,
                    }
                ).decode()
            )
            return 0
        per_operation = await memory.bytes_per_operation(redis, f"{prefix}-memory", operations)
        after = await memory.steady(redis, f"{prefix}-steady", operations)
    finally:
        await redis.aclose()
    _print_memory(per_operation, after)
    print(orjson.dumps(_memory_figures(per_operation, after)).decode())
    return 0


def _print_memory(per_operation: float, after: memory.Steady) -> None:
    print(
        f"Redis memory per operation (command and event, stream capped): {per_operation:.0f} bytes"
    )
    print(
        f"after {after.burst} operations expired under steady traffic: {after.index_members}"
        f" index members ({after.dead_members} naming expired operations) for"
        f" {after.live_operations} live operations"
    )


def _memory_figures(per_operation: float, after: memory.Steady) -> dict[str, float | int]:
    return {
        "redis_bytes_per_operation": round(per_operation),
        "index_members_after_expiry": after.index_members,
        "dead_members_after_expiry": after.dead_members,
        "live_operations_after_expiry": after.live_operations,
    }


def _best(figures: list[drain.Figure], name: str) -> drain.Figure:
    best = max(figures, key=lambda figure: figure.rate)
    return drain.Figure(name, best.messages, best.seconds)


def _rates(figures: list[drain.Figure]) -> str:
    return " / ".join(f"{figure.rate:.0f}" for figure in figures)


def _ratio(figure: drain.Figure, ceiling: drain.Figure) -> float:
    return figure.rate / ceiling.rate if ceiling.rate else 0.0


async def _delete_queues(
    connection: aio_pika.abc.AbstractRobustConnection, names: list[str]
) -> None:
    async with connection.channel() as channel:
        for name in names:
            await channel.queue_delete(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raise_file_limit() -> None:
    """A thousand clients and their server need more descriptors than the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8_192 if hard == resource.RLIM_INFINITY else min(hard, 8_192)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
