"""The sagas' side of the broker: deliveries become saga messages for the coordinator, and each
result becomes a settlement (ack, retry later, or dead-letter)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .. import documents, tracing
from ..attempts import described, header_count
from ..consumer import ATTEMPTS_HEADER, ROUTING_KEY_HEADER
from ..envelope import Delivered, header_text
from ..errors import DocumentError, SagaDataError, StoreUnavailable
from ..logs import handling, logged_id
from ..settlements import Ack, DeadLetter, Failed, Retry, Settlement
from .coordinator import Coordinator
from .results import SagaOutcome
from .saga import SagaContext, SagaMessage

log = logging.getLogger("operations.sagas.inbox")


class SagaInbox:
    def __init__(
        self, coordinator: Coordinator, early_retries: int = 5, early_delay_seconds: float = 1.0
    ) -> None:
        self.coordinator = coordinator
        self.early_retries = early_retries
        self.early_delay_seconds = early_delay_seconds

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]:
        """One message at a time, in order: a saga's steps must see its messages in sequence."""
        return [await self._one(delivered) for delivered in batch]

    async def _one(self, delivered: Delivered) -> Settlement:
        headers = delivered.headers or {}
        name = delivered.routing_key or ""
        if not delivered.exchange:  # back from the retry queue: the original name is kept
            name = header_text(headers.get(ROUTING_KEY_HEADER)) or name
        try:
            body = documents.decode(delivered.body)
            message_context = _context(headers)
        except DocumentError as error:
            log.warning(
                "saga message %s dead-lettered: %s",
                name,
                error.reason,
                extra={"correlation_id": logged_id(delivered)},
            )
            return DeadLetter(f"saga message {name}: {error.reason}")
        if not isinstance(body, dict):
            return DeadLetter(f"saga message {name}: body is not a JSON object")
        message = SagaMessage(name, body, delivered.message_id)
        context = SagaContext(delivered.correlation_id, message_context)
        with (
            handling(logged_id(delivered)),
            tracing.processing(
                headers,
                delivered.exchange,
                delivered.routing_key,
                delivered.message_id,
                delivered.correlation_id,
                _field(context.message_context, "traceId"),
            ) as span,
        ):
            if span is not None:
                span.set_attribute("operations.saga.message", name)
                if (operation_id := logged_id(delivered)) is not None:
                    span.set_attribute(tracing.OPERATION_ID, operation_id)
            try:
                results = await self.coordinator.process(message, context)
                if span is not None:
                    done = sorted({result.outcome.value for result in results})
                    span.set_attribute("operations.saga.outcomes", done)
            except StoreUnavailable:
                raise
            except SagaDataError as error:
                # The saga's data does not fit its class or its bounds: no retry can mend that.
                log.error(
                    "saga message %s: %s",
                    name,
                    error.reason,
                    extra={"correlation_id": logged_id(delivered)},
                )
                if span is not None:
                    tracing.failed(span, error.reason)
                return DeadLetter(f"saga message {name}: {error.reason}")
            except Exception as error:
                # The consumer retries it later, and dead-letters it once it has failed too often.
                reason = described(error)
                if span is not None:
                    tracing.failed(span, reason)
                log.exception(
                    "saga message %s failed", name, extra={"correlation_id": logged_id(delivered)}
                )
                return Failed(reason)
        outcomes = {result.outcome for result in results}
        attempt = header_count(headers, ATTEMPTS_HEADER) + 1
        if SagaOutcome.EARLY in outcomes and not _in_saga_flow(headers):
            # Only messages carrying a Saga header belong to a saga's flow; the same event
            # raised outside any saga is not ours to wait for.
            return Ack("no saga")
        if SagaOutcome.EARLY in outcomes or SagaOutcome.CONFLICT in outcomes:
            what = "no saga to take it yet" if SagaOutcome.EARLY in outcomes else "kept conflicting"
            if attempt > self.early_retries:
                return DeadLetter(f"saga message {name}: {what} after {attempt - 1} retries")
            log.info(
                "saga message %s: %s; retry %d in %.1fs",
                name,
                what,
                attempt,
                self.early_delay_seconds,
                extra={"correlation_id": logged_id(delivered)},
            )
            return Retry(what, self.early_delay_seconds, attempt)
        return Ack(",".join(sorted(outcomes)) or "no saga")


def _field(context: Mapping[str, Any], name: str) -> Any:
    """A camelCase field of a CorrelationContext, or its PascalCase spelling (.NET's)."""
    value = context.get(name)
    return value if value is not None else context.get(name[0].upper() + name[1:])


def _in_saga_flow(headers: Mapping[str, Any]) -> bool:
    return any(key.lower() == "saga" for key in headers)


def _context(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message_context header's object, kept with the saga: one that is not a JSON object
    reads as none, and one that breaks the bounds raises DocumentError."""
    for key, value in headers.items():
        if key.lower() == "message_context":
            text = header_text(value)
            if text is None:
                return {}
            try:
                parsed = documents.decode(text)
            except DocumentError as error:
                if error.where == "" and error.reason.startswith("not valid JSON"):
                    return {}
                raise DocumentError("", f"headers.message_context: {error.reason}") from None
            return parsed if isinstance(parsed, dict) else {}
    return {}
