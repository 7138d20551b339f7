"""The ``operations`` command: serve, token, bench, demo-services, demo-orders, dead-letters."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from operations.errors import CatalogueError, SagaTypeError, SettingsError
from operations.settings import Settings

if TYPE_CHECKING:
    import uvicorn


def parser() -> argparse.ArgumentParser:
    """Every command and its options; ``commands()`` lists the commands from it."""
    # No abbreviations: "--latency 400" must be refused, not taken for "--latency-ms 400".
    cli = argparse.ArgumentParser(
        prog="operations",
        description="Track long-running operations carried by RabbitMQ.",
        allow_abbrev=False,
    )
    subcommands = cli.add_subparsers(dest="command", required=True)

    subcommands.add_parser(
        "serve", help="run the service (HTTP and Socket.IO on one port)", allow_abbrev=False
    )

    token = subcommands.add_parser("token", help="print a development JWT", allow_abbrev=False)
    token.add_argument("--user", required=True, help="the user id (the token's sub)")
    token.add_argument("--role", action="append", default=[], help="a role, e.g. admin")
    token.add_argument("--ttl", type=int, default=3_600, help="lifetime in seconds")
    token.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra claim, repeatable; VALUE is read as JSON when it is JSON, else as a string;"
        " a dotted KEY nests, e.g. realm_access.roles='[\"admin\"]'",
    )

    bench = subcommands.add_parser(
        "bench", help="measure throughput against a bare consumer", allow_abbrev=False
    )
    bench.add_argument("--messages", type=int, default=50_000)
    bench.add_argument("--prefetch", type=int, default=None)
    bench.add_argument("--clients", type=int, default=1_000, help="idle clients for the RSS figure")
    bench.add_argument("--seconds", type=float, default=5.0, help="length of each latency run")
    bench.add_argument("--soak", type=int, default=500_000, help="messages in the memory soak")
    bench.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of the bare, bare multi-ack and full-path drains, taken in turns; best kept",
    )
    bench.add_argument(
        "--memory-operations",
        type=int,
        default=20_000,
        help="operations for the Redis memory figures (per operation, and the burst that expires)",
    )
    bench.add_argument(
        "--tracing",
        action="store_true",
        help="the service processes export a span per message over OTLP/HTTP to a local sink",
    )
    bench.add_argument(
        "--memory",
        action="store_true",
        help="only the Redis memory figures: bytes per operation, the indexes after expiry",
    )
    bench.add_argument(
        "--memory-soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="instead, soak Redis with steady traffic for SECONDS and show its memory over time",
    )
    bench.add_argument(
        "--fanout",
        action="store_true",
        help="only the fan-out: users and admins connected from client processes, a steady"
        " stream of changes pushed to them, and connection churn",
    )
    bench.add_argument("--fanout-users", type=int, default=15_000, help="users connected")
    bench.add_argument("--fanout-admins", type=int, default=10, help="admins connected")
    bench.add_argument(
        "--fanout-seconds", type=float, default=60.0, help="how long the changes are published"
    )
    bench.add_argument("--fanout-rate", type=int, default=1_000, help="changes a second")
    bench.add_argument(
        "--fanout-churn",
        type=float,
        default=200.0,
        help="extra clients connecting and disconnecting a second meanwhile (0: none)",
    )
    bench.add_argument(
        "--fanout-profile",
        metavar="FILE",
        default=None,
        help="run the fan-out's service process under cProfile, its statistics written to FILE",
    )

    demo = subcommands.add_parser(
        "demo-services",
        help="run simulated Pacco orders, vehicles and availability services",
        allow_abbrev=False,
    )
    demo.add_argument(
        "--latency-ms", type=int, default=50, help="simulated work before each reply (ms)"
    )
    demo.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="MESSAGE=RATE",
        help="reject that command with probability RATE (0..1); repeatable",
    )
    demo.add_argument("--seed", type=int, default=None, help="seed for reproducible failures")

    letters = subcommands.add_parser(
        "dead-letters",
        help="list, show, redrive or discard the dead letters the service keeps",
        description="Work on the dead letters kept in Redis, with the service's own settings"
        " (OPERATIONS_REDIS_URL, OPERATIONS_AMQP_URL, OPERATIONS_KEY_PREFIX, ...).",
        allow_abbrev=False,
    )
    letters.add_argument(
        "action",
        choices=("list", "show", "redrive", "discard"),
        help="list them (newest first), show some whole, redrive them to their original"
        " exchange and routing key, or discard them",
    )
    letters.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids")
    letters.add_argument("--queue", help="only this queue's (with --reason: one group)")
    letters.add_argument("--reason", help="only those with this exact reason")
    letters.add_argument("--limit", type=int, default=50, help="list at most this many")
    letters.add_argument("--cursor", help="list on from where the last list ended")
    letters.add_argument("--groups", action="store_true", help="list the groups by reason")
    letters.add_argument("--json", action="store_true", help="list as JSON")

    orders = subcommands.add_parser(
        "demo-orders",
        help="place an order with POST /orders every few seconds, for the demo",
        allow_abbrev=False,
    )
    orders.add_argument("--user", default="demo-user", help="the user placing the orders")
    orders.add_argument("--every", type=float, default=3.0, help="seconds between orders")
    orders.add_argument("--count", type=int, default=1_000, help="stop after this many orders")
    orders.add_argument("--seed", type=int, default=None)
    orders.add_argument(
        "--follow",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="follow each order for at most this long and print a line on standard output when"
        " it completes or is rejected; 0: do not follow",
    )
    return cli


def commands() -> list[str]:
    """The command names, read from the parser, for checks that must cover every command."""
    for action in parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    raise AssertionError("the parser has no commands")


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            return _serve(settings)
        if args.command == "token":
            return _token(settings, args.user, tuple(args.role), args.ttl, tuple(args.claim))
        if args.command == "bench":
            from operations.bench import run as run_bench
            from operations.bench import run_memory

            if args.memory_operations < 1:
                print("operations: --memory-operations must be positive", file=sys.stderr)
                return 2
            if args.fanout:
                from operations.bench import fanout

                return _run_fast(
                    fanout.run(
                        settings,
                        args.fanout_users,
                        args.fanout_admins,
                        args.fanout_seconds,
                        args.fanout_churn,
                        args.fanout_rate,
                        args.fanout_profile,
                    )
                )
            if args.memory or args.memory_soak > 0:
                return _run_fast(run_memory(settings, args.memory_soak, args.memory_operations))
            return _run_fast(
                run_bench(
                    settings,
                    args.messages,
                    args.prefetch,
                    args.clients,
                    args.seconds,
                    args.soak,
                    args.rounds,
                    args.memory_operations,
                    args.tracing,
                )
            )
        if args.command == "dead-letters":
            from operations.deadletters.commands import run as run_dead_letters

            return asyncio.run(
                run_dead_letters(
                    settings,
                    args.action,
                    list(args.ids),
                    args.queue,
                    args.reason,
                    args.limit,
                    args.cursor,
                    args.groups,
                    args.json,
                )
            )
        if args.command == "demo-orders":
            return _demo_orders(settings, args.user, args.every, args.count, args.seed, args.follow)
        if args.command == "demo-services":
            return _demo_services(settings, args.latency_ms, tuple(args.fail), args.seed)
    except SettingsError as error:
        print(f"operations: invalid setting {error.reason}", file=sys.stderr)
        return 2
    except CatalogueError as error:
        print(f"operations: invalid message catalogue: {error.reason}", file=sys.stderr)
        return 2
    except SagaTypeError as error:
        print(
            f"operations: invalid saga type in OPERATIONS_SAGA_TYPES: {error.reason}",
            file=sys.stderr,
        )
        return 2
    cli.error(f"unknown command {args.command}")
    return 2


def server_config(app: Any, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """How uvicorn serves the service, here and in the tests that start it in process.

    permessage-deflate only with ``OPERATIONS_WS_COMPRESSION``: uvicorn would otherwise negotiate
    it with every client that offers it (browsers do) and keep a compressor and a decompressor
    per connection. No WebSocket pings of uvicorn's own: engine.io already pings every client and
    closes one that does not answer (every 25 s, 20 s to answer), so a second heartbeat would
    only cost a timer per connection and twice the traffic. The WebSocket connection is
    uvicorn's own, which frees what it leaves in cycles when it closes (:mod:`hub.partings`)."""
    import uvicorn

    from hub.partings import WebSocketProtocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        access_log=False,
        ws=WebSocketProtocol,
        ws_per_message_deflate=settings.ws_compression,
        ws_ping_interval=None,
        ws_ping_timeout=None,
    )


def _serve(settings: Settings) -> int:
    import uvicorn

    from operations import garbage, logs, tracing
    from operations.service import Service

    logs.configure(settings.log_level, form=settings.log_format)
    tracing.configure()  # a SettingsError for an exporter that is not installed
    garbage.tune(settings.gc_thresholds)
    service = Service(settings)
    garbage.Pauses(service.metrics.gc_pauses).install()
    config = server_config(service.asgi, settings, settings.host, settings.port)

    class Server(uvicorn.Server):
        """uvicorn's server, which tells the service it begins to stop before it waits for the
        requests in flight. uvicorn runs the lifespan shutdown only once every request has
        ended, so a long-poll would hold a SIGTERM for its whole wait (up to 60 s). Its
        ``shutdown`` runs in the event loop once a signal (or ``on_fatal``) has asked the
        server to exit; the waits woken here answer only after it has closed the listening
        sockets and told every connection not to keep alive, which it does before it first
        awaits. A signal handler of our own would be replaced by uvicorn's, and would run
        between any two bytecodes rather than in the loop."""

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            service.begin_stop()
            await super().shutdown(sockets)
            # After a signal uvicorn raises it again once serving ends, which ends the process
            # before any ``finally`` below: the spans still buffered are exported here.
            await asyncio.to_thread(tracing.shutdown)

    server = Server(config)

    def stop() -> None:
        server.should_exit = True

    service.on_fatal = stop
    try:
        server.run()
    finally:
        tracing.shutdown()
    if service.fatal is not None:
        print(f"operations: cannot start: {service.fatal.reason}", file=sys.stderr)
        return 2
    return 0


def _token(
    settings: Settings, user: str, roles: tuple[str, ...], ttl: int, claim_options: tuple[str, ...]
) -> int:
    from operations.auth.claims import ClaimError, parse_claims
    from operations.auth.tokens import mint

    if ttl <= 0:
        print("operations: --ttl must be positive", file=sys.stderr)
        return 2
    try:
        extra = parse_claims(claim_options)
    except ClaimError as error:
        print(f"operations: {error.reason}", file=sys.stderr)
        return 2
    secret = settings.signing_secret()
    print(mint(secret, user, roles, ttl, settings.jwt_issuer, settings.jwt_audience, extra=extra))
    return 0


def _demo_services(
    settings: Settings, latency_ms: int, fail: tuple[str, ...], seed: int | None
) -> int:
    from operations import logs, tracing
    from operations.pacco.demo import FailurePlan, FailurePlanError, failable
    from operations.pacco.demo import run as run_demo

    if latency_ms < 0:
        print("operations: --latency-ms must not be negative", file=sys.stderr)
        return 2
    try:
        failures = FailurePlan.parse(fail, failable())
    except FailurePlanError as error:
        print(f"operations: {error.reason}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, form=settings.log_format)
    tracing.configure("pacco-demo-services")
    try:
        return asyncio.run(run_demo(settings, latency_ms, failures, seed))
    finally:
        tracing.shutdown()


def _demo_orders(
    settings: Settings, user: str, every: float, count: int, seed: int | None, follow: float
) -> int:
    from operations import logs
    from operations.pacco.demo.orders import place_orders

    if every <= 0 or count <= 0:
        print("operations: --every and --count must be positive", file=sys.stderr)
        return 2
    if not 0 <= follow <= 86_400:
        print("operations: --follow must be from 0 to 86400 seconds", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, form=settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(place_orders(settings, user, every, count, seed, follow))
    return 0


def _run_fast(main: Coroutine[Any, Any, int]) -> int:
    """On uvloop when it is installed (it is with uvicorn[standard]), as ``serve`` runs."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
