"""``operations demo-services``: the simulated Pacco services on RabbitMQ.

Each service has a durable queue (``demo.<name>``) bound by message name, and a channel with
publisher confirms on which it consumes, replies and acknowledges. A command is acknowledged only
after its reply is confirmed; if the reply cannot be published the command is requeued.

The queues are of the type ``OPERATIONS_QUEUE_TYPE`` names, so that on a RabbitMQ cluster the
simulated services' queues are replicated like the service's own. They stand for other services'
queues, which the service does not own: they get no delivery limit and no dead-letter queue.

Messages are handled concurrently, a task each, so one message's simulated latency does not hold
up the others. Replies to one correlation id still leave a service in the order its messages
arrived: each task waits for the previous task of the same correlation id before publishing
(a saga's replies then arrive in the order it sent its commands, as from a sequential consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from types import TracebackType
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.exceptions import AMQPError

from operations import tracing
from operations.amqp.queues import CLASSIC, QueueArguments
from operations.amqp.topology import declared
from operations.errors import QueueMismatch
from operations.pacco.demo.answers import Decision, VehicleAssignments, answer
from operations.pacco.demo.convey import reply_message
from operations.pacco.demo.failures import FailurePlan
from operations.pacco.demo.rules import SERVICES, SimulatedService
from operations.settings import Settings
from operations.tasks import BackgroundTasks

log = logging.getLogger("operations.pacco.demo")

_STOP_GRACE_SECONDS = 5.0


class Responder:
    """One simulated service at work: decides each message's answer and publishes it."""

    def __init__(
        self,
        service: SimulatedService,
        exchange: AbstractExchange,
        failures: FailurePlan,
        rng: random.Random,
        latency: float,
        assignments: VehicleAssignments,
        tasks: BackgroundTasks,
    ) -> None:
        self.service = service
        self._tasks = tasks
        self._exchange = exchange
        self._failures = failures
        self._rng = rng
        self._latency = latency
        self._assignments = assignments
        self._tails: dict[str | None, asyncio.Task[None]] = {}

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # No await before the task is created: decisions (and seeded draws) follow delivery order.
        decided = self._decide(message)
        key = message.correlation_id
        task = self._tasks.start(
            f"demo-{self.service.name}-reply", self._reply(message, decided, self._tails.get(key))
        )
        self._tails[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, key: str | None, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    def _decide(self, message: AbstractIncomingMessage) -> Decision:
        rule = self.service.rule(message.exchange or "", message.routing_key or "")
        if rule is None:
            decided = Decision(None, {}, f"{message.routing_key!r} is not handled here")
        else:
            decided = answer(
                self.service,
                rule,
                message.body,
                message.correlation_id,
                self._failures,
                self._rng,
                self._assignments,
            )
        if decided.problem is not None:
            log.warning(
                "%s service: %s on %s: %s",
                self.service.name,
                message.routing_key,
                message.exchange,
                decided.problem,
                extra={"correlation_id": message.correlation_id, "message_id": message.message_id},
            )
        return decided

    async def _reply(
        self,
        message: AbstractIncomingMessage,
        decided: Decision,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Handles the message in a span of the trace it carries, as a traced Convey service
        does; the reply carries that span's ``traceparent``."""
        with tracing.processing(
            message.headers,
            message.exchange,
            message.routing_key,
            message.message_id,
            message.correlation_id,
        ) as span:
            if span is not None:
                span.set_attribute("operations.demo.service", self.service.name)
            await self._answer(message, decided, previous)

    async def _answer(
        self,
        message: AbstractIncomingMessage,
        decided: Decision,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if self._latency > 0:
            await asyncio.sleep(self._latency)
        if previous is not None:
            await asyncio.wait({previous})
        try:
            if decided.routing_key is not None:
                # Not mandatory: like Convey, a reply nobody is bound to is dropped, not returned.
                await self._exchange.publish(
                    reply_message(message, decided.body),
                    routing_key=decided.routing_key,
                    mandatory=False,
                )
            await message.ack()
        except (AMQPError, ConnectionError, RuntimeError) as error:
            log.warning(
                "%s service: reply to %s not confirmed, the broker will redeliver it: %s",
                self.service.name,
                message.routing_key,
                error,
                extra={"correlation_id": message.correlation_id},
            )
            with contextlib.suppress(AMQPError, ConnectionError, RuntimeError):
                await message.nack(requeue=True)


class DemoServices:
    """The simulated services on one robust connection; ``async with`` starts and stops them."""

    def __init__(
        self,
        amqp_url: str,
        *,
        latency_ms: int = 50,
        failures: FailurePlan | None = None,
        seed: int | None = None,
        services: tuple[SimulatedService, ...] = SERVICES,
        prefetch: int = 256,
        queue_arguments: QueueArguments = CLASSIC,
    ) -> None:
        self.amqp_url = amqp_url
        self.queue_arguments = queue_arguments
        self.latency_ms = latency_ms
        self.failures = failures if failures is not None else FailurePlan()
        self.seed = seed
        self.services = services
        self.prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._responders: list[Responder] = []
        self._tasks = BackgroundTasks(logger=log)

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.amqp_url, client_properties={"connection_name": "operations-demo-services"}
        )
        try:
            assignments = VehicleAssignments()
            for service in self.services:
                await self._start_service(self._connection, service, assignments)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "simulating %s on %s; latency %d ms; failures: %s",
            ", ".join(f"{s.name} ({s.queue})" for s in self.services),
            _where(self.amqp_url),
            self.latency_ms,
            self.failures.describe(),
        )

    async def _start_service(
        self,
        connection: AbstractRobustConnection,
        service: SimulatedService,
        assignments: VehicleAssignments,
    ) -> None:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self.prefetch)
        exchanges: dict[str, AbstractExchange] = {}
        for name in sorted(service.sources | {service.exchange}):
            exchanges[name] = await channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        queue = await declared(channel, service.queue, self.queue_arguments.plain())
        for rule in service.replies:
            await queue.bind(exchanges[rule.source], routing_key=rule.message)
        # Per service, so a seeded run's draws do not depend on how the queues interleave.
        rng = random.Random(f"{self.seed}:{service.name}") if self.seed is not None else None
        responder = Responder(
            service,
            exchanges[service.exchange],
            self.failures,
            rng or random.Random(),
            self.latency_ms / 1000,
            assignments,
            self._tasks,
        )
        self._responders.append(responder)
        self._consumers.append((queue, await queue.consume(responder.on_message)))

    async def stop(self) -> None:
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except (AMQPError, ConnectionError, RuntimeError) as error:
                log.info("cancelling the %s consumer failed: %s", queue.name, error)
        self._consumers.clear()
        # Replies under way get to finish; whatever is left is unacknowledged and redelivered.
        await self._tasks.finish(self.latency_ms / 1000 + _STOP_GRACE_SECONDS)
        await self._tasks.stop()
        self._responders.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def __aenter__(self) -> DemoServices:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


async def run(settings: Settings, latency_ms: int, failures: FailurePlan, seed: int | None) -> int:
    """Run the simulated services until SIGINT or SIGTERM."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    services = DemoServices(
        settings.amqp_url,
        latency_ms=latency_ms,
        failures=failures,
        seed=seed,
        queue_arguments=settings.queue_arguments,
    )
    try:
        await services.start()
    except QueueMismatch as error:
        log.error("cannot start: %s", error)
        return 2
    except (OSError, AMQPError) as error:
        log.error("cannot reach RabbitMQ at %s: %s", _where(settings.amqp_url), error)
        return 1
    try:
        await stopping.wait()
    finally:
        log.info("stopping the simulated services")
        await services.stop()
    return 0


def _where(amqp_url: str) -> str:
    """The broker's address without credentials, for logs."""
    parts = urlsplit(amqp_url)
    return f"{parts.hostname}:{parts.port or 5672}{parts.path}"
