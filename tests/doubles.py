"""A test double of another service over the real broker: it consumes the commands it is told
about and answers each with an event, as a Convey service does (the command's correlation id and
context headers carried over)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from operations.pacco.demo.convey import reply_message

Reply = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Answer:
    """Answer ``command`` (on ``exchange``) with ``event`` on the same exchange; ``body`` makes
    the event's body from the command's, or None to leave that command unanswered."""

    exchange: str
    command: str
    event: str | None
    body: Reply = lambda body: body


@dataclass
class ServiceDouble:
    connection: AbstractRobustConnection
    answers: list[Answer]
    received: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    async def __aenter__(self) -> ServiceDouble:
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        self.exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        for answer in self.answers:
            if answer.exchange not in self.exchanges:
                self.exchanges[answer.exchange] = await self.channel.declare_exchange(
                    answer.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
            await self.queue.bind(self.exchanges[answer.exchange], routing_key=answer.command)
        self.tag = await self.queue.consume(self._on_message)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.queue.cancel(self.tag)
        await self.channel.close()

    def commands(self, correlation_id: str) -> list[str]:
        return [name for name, correlation, _ in self.received if correlation == correlation_id]

    def bodies(self, correlation_id: str, command: str) -> list[dict[str, Any]]:
        return [
            body
            for name, correlation, body in self.received
            if correlation == correlation_id and name == command
        ]

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        body = orjson.loads(message.body)
        command = message.routing_key or ""
        self.received.append((command, message.correlation_id, body))
        answer = self._answer(message.exchange or "", command)
        reply = answer.body(body) if answer is not None and answer.event is not None else None
        if answer is not None and answer.event is not None and reply is not None:
            await self.exchanges[answer.exchange].publish(
                reply_message(message, reply), routing_key=answer.event
            )
        await message.ack()

    def _answer(self, exchange: str, command: str) -> Answer | None:
        for answer in self.answers:
            if (answer.exchange, answer.command) == (exchange, command):
                return answer
        return None


def context_of(headers: Mapping[str, Any]) -> dict[str, Any]:
    raw = headers.get("message_context")
    if isinstance(raw, bytes | bytearray | str):
        parsed = orjson.loads(raw)
        return parsed if isinstance(parsed, dict) else {}
    return {}
