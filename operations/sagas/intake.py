"""The sagas' side of the broker: deliveries become saga messages for the coordinator, and each
result becomes a settlement (ack, retry later, or dead-letter). Headers, ``message_context`` and
ids are read by :mod:`operations.envelope`, as the tracking path reads them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from operations import documents, envelope, tracing
from operations.amqp.attempts import described
from operations.amqp.copies import as_first_sent, attempts_of
from operations.amqp.settlements import Ack, DeadLetter, Failed, Retry, Settlement
from operations.envelope import Delivered
from operations.errors import DocumentError, EnvelopeError, SagaDataError, StoreUnavailable
from operations.logs import handling, logged_id
from operations.sagas.coordinator import Coordinator
from operations.sagas.results import SagaOutcome
from operations.sagas.saga import SagaContext, SagaMessage

log = logging.getLogger("operations.sagas.intake")


class SagaIntake:
    def __init__(
        self,
        coordinator: Coordinator,
        early_retries: int = 5,
        early_delay_seconds: float = 1.0,
        max_context_bytes: int = 262_144,
    ) -> None:
        """``max_context_bytes``: the longest ``message_context`` read, as the tracking path's
        ``OPERATIONS_MAX_MESSAGE_BYTES``."""
        self.coordinator = coordinator
        self.early_retries = early_retries
        self.early_delay_seconds = early_delay_seconds
        self.max_context_bytes = max_context_bytes

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]:
        """One message at a time, in order: a saga's steps must see its messages in sequence."""
        return [await self._one(delivered) for delivered in batch]

    async def _one(self, delivered: Delivered) -> Settlement:
        headers = delivered.headers or {}
        name = as_first_sent(delivered).routing_key or ""
        problems: list[str] = []
        try:
            body = documents.decode(delivered.body)
            message_context = envelope.message_context(
                headers, self.max_context_bytes, problems, kept=True
            )
            correlation_id = envelope.operation_id(delivered.correlation_id)
            message_id = envelope.message_id(delivered.message_id)
        except (DocumentError, EnvelopeError) as error:
            log.warning(
                "saga message %s dead-lettered: %s",
                name,
                error.reason,
                extra={"correlation_id": logged_id(delivered)},
            )
            return DeadLetter(f"saga message {name}: {error.reason}")
        if not isinstance(body, dict):
            return DeadLetter(f"saga message {name}: body is not a JSON object")
        if problems:
            log.warning(
                "saga message %s read without its message_context: %s",
                name,
                "; ".join(problems),
                extra={"correlation_id": logged_id(delivered)},
            )
        message = SagaMessage(name, body, message_id)
        context = SagaContext(correlation_id, message_context)
        with (
            handling(logged_id(delivered)),
            tracing.processing(
                headers,
                delivered.exchange,
                delivered.routing_key,
                delivered.message_id,
                delivered.correlation_id,
                envelope.context_trace_id(message_context),
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
        attempt = attempts_of(delivered) + 1
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


def _in_saga_flow(headers: Mapping[str, Any]) -> bool:
    return envelope.header(headers, "Saga") is not None
