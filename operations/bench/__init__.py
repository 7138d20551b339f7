"""``operations bench``: the service measured against ceilings taken in the same run.

Against the local RabbitMQ and Redis named by the settings, it measures:

- ``bare``: an aio-pika consumer that only acknowledges each of N pre-published messages;
- ``service``: the service's consumer and pipeline draining the same N messages, until all N
  operations are applied in Redis;
- ``push``: a separate ``operations serve`` process draining N messages until one connected
  Socket.IO client has received all N pushes;
- latency from publish to that client at fixed offered loads below saturation;
- the service process's memory per idle connected Socket.IO client.

It prints a table, then one JSON line, last, with a key for each figure.
"""

from __future__ import annotations

import resource
import socket
import uuid
from dataclasses import replace

import aio_pika
import orjson
import redis.asyncio as aioredis

from ..catalogue import Catalogue
from ..settings import Settings
from ..topology import declare_queue
from . import drain, push, traffic

LOADS = (500, 1000)


async def run(
    settings: Settings,
    messages: int,
    prefetch: int | None = None,
    clients: int = 1_000,
    latency_seconds: float = 5.0,
) -> int:
    if messages < 1 or clients < 1 or latency_seconds <= 0:
        raise SystemExit("operations bench: --messages, --clients and --seconds must be positive")
    _raise_file_limit()
    run_id = uuid.uuid4().hex[:8]
    settings = replace(
        settings,
        queue=f"operations-bench-{run_id}",
        key_prefix=f"bench-{run_id}",
        prefetch=prefetch or settings.prefetch,
    )
    push_settings = replace(settings, queue=f"{settings.queue}-push")
    catalogue = Catalogue.load(settings.messages_file)
    bare_queue = f"operations-bench-bare-{run_id}"
    connection = await aio_pika.connect_robust(settings.amqp_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    queues = [bare_queue, settings.queue, settings.dead_letter_queue]
    try:
        async with connection.channel() as channel:
            await declare_queue(channel, catalogue, bare_queue)
            await declare_queue(channel, catalogue, settings.queue)
        print(f"publishing {messages} messages to two identically bound queues ...", flush=True)
        await traffic.publish(connection, messages)
        bare = await drain.bare(connection, bare_queue, messages, settings.prefetch)
        service = await drain.service(settings, catalogue, redis, messages)
        await _delete_queues(connection, queues)

        queues = [push_settings.queue, push_settings.dead_letter_queue]
        async with connection.channel() as channel:
            await declare_queue(channel, catalogue, push_settings.queue)
        print("draining through a service process to a Socket.IO client ...", flush=True)
        pushed, via_sync = await push.drain_to_client(
            push_settings, connection, redis, messages, _free_port()
        )
        latencies: dict[int, tuple[float, float]] = {}
        async with push.service_process(push_settings, _free_port()) as process:
            for load in LOADS:
                print(f"latency at {load} msg/s for {latency_seconds:g} s ...", flush=True)
                latencies[load] = await push.latency(
                    process, connection, settings.jwt_secret, load, latency_seconds
                )
            print(f"connecting {clients} idle Socket.IO clients ...", flush=True)
            kib = await push.memory_per_client(process, settings.jwt_secret, clients)
    finally:
        await _delete_queues(connection, queues)
        await drain.delete_keys(redis, f"{settings.key_prefix}:*")
        await redis.aclose()
        await connection.close()

    ratio = service.rate / bare.rate if bare.rate else 0.0
    push_ratio = pushed.rate / bare.rate if bare.rate else 0.0
    print()
    print(f"{'run':<10} {'messages':>9} {'seconds':>9} {'msg/s':>10}  ratio to bare")
    for figure in (bare, service, pushed):
        print(
            f"{figure.name:<10} {figure.messages:>9} {figure.seconds:>9.3f} {figure.rate:>10.0f}"
            f"  {figure.rate / bare.rate if bare.rate else 0:.2f}"
        )
    print(f"({via_sync} of the push run's {messages} records reached the client in its sync)")
    print()
    print(f"{'offered':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for load, (p50, p99) in latencies.items():
        print(f"{load:>6}/s   {p50:>8.2f} {p99:>8.2f}")
    print(f"\nRSS per idle connected client at {clients} clients: {kib:.1f} KiB")
    print(f"prefetch {settings.prefetch}, batch size {settings.batch_size}")
    figures: dict[str, float | int] = {
        "messages": messages,
        "prefetch": settings.prefetch,
        "bare_rate": round(bare.rate, 1),
        "service_rate": round(service.rate, 1),
        "ratio": round(ratio, 3),
        "push_rate": round(pushed.rate, 1),
        "push_ratio": round(push_ratio, 3),
    }
    for load, (p50, p99) in latencies.items():
        figures[f"p50_ms_{load}"] = round(p50, 2)
        figures[f"p99_ms_{load}"] = round(p99, 2)
    figures["p50_ms"], figures["p99_ms"] = figures["p50_ms_1000"], figures["p99_ms_1000"]
    figures["clients"] = clients
    figures["kib_per_client"] = round(kib, 1)
    print(orjson.dumps(figures).decode())
    return 0


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
