"""One batch of deliveries through the service: envelope, state decision, store, settlement.

Broker-free: it reads messages through the :class:`Delivered` protocol and returns one
:class:`Settlement` per message, in order, for the consumer to carry out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from opentelemetry.trace import Span

from operations import tracing
from operations.amqp.catalogue import Catalogue
from operations.amqp.copies import as_first_sent
from operations.amqp.settlements import Ack, DeadLetter, Disposition, Settlement
from operations.envelope import Delivered, Envelope
from operations.errors import EnvelopeError, StoreError
from operations.logs import logged_id
from operations.metrics import Registry
from operations.records import ApplyOutcome
from operations.store.redis_store import Store

log = logging.getLogger("operations.pipeline")


class Pipeline:
    def __init__(
        self, catalogue: Catalogue, store: Store, metrics: Registry, max_message_bytes: int
    ) -> None:
        self.catalogue = catalogue
        self.store = store
        self.metrics = metrics
        self.max_message_bytes = max_message_bytes

    async def process(self, batch: Sequence[Delivered]) -> list[Settlement]:
        """Raises StoreUnavailable when Redis cannot be reached; nothing is settled then."""
        if not tracing.active():
            return await self._process(batch, None)
        # One consumer span per message, from its parsing to its settlement, all in the batch's
        # one store round trip: started and ended here, never awaited on.
        spans: list[Span | None] = [None] * len(batch)
        try:
            settlements = await self._process(batch, spans)
        except BaseException as error:
            for span in spans:
                if span is not None:
                    span.record_exception(error)
                    tracing.failed(span, f"batch not applied: {type(error).__name__}")
                    span.end()
            raise
        for span, settlement in zip(spans, settlements, strict=True):
            if span is not None:
                tracing.settled(span, settlement)
        return settlements

    async def _process(
        self, batch: Sequence[Delivered], spans: list[Span | None] | None
    ) -> list[Settlement]:
        settlements: list[Settlement | None] = [None] * len(batch)
        pending: list[tuple[int, Envelope]] = []
        for position, delivered in enumerate(batch):
            source = as_first_sent(delivered)
            try:
                envelope: Envelope | None = self.catalogue.read(source, self.max_message_bytes)
                problem = ""
            except EnvelopeError as error:
                envelope, problem = None, error.reason
            if spans is not None:
                spans[position] = tracing.consumed(delivered, envelope)
            if envelope is None:
                settlements[position] = self._dead_letter(delivered, problem)
                continue
            if envelope.operation_id is None:
                self.metrics.messages.inc(kind=envelope.kind.value, outcome="ignored")
                log.info(
                    "ignored %s: no correlation id",
                    envelope.message,
                    extra={"message_id": envelope.message_id},
                )
                settlements[position] = Ack("no correlation id")
                continue
            pending.append((position, envelope))

        changes = await self.store.apply([envelope for _, envelope in pending])
        tally: Counter[tuple[str, str]] = Counter()
        for (position, envelope), change in zip(pending, changes, strict=True):
            if isinstance(change, StoreError):
                settlements[position] = self._dead_letter(
                    batch[position], f"store: {change.reason}", envelope
                )
                continue
            tally[envelope.kind.value, change.outcome.value] += 1
            if spans is not None:
                span = spans[position]
                assert span is not None
                span.set_attribute("operations.outcome", change.outcome.value)
            if envelope.problems and change.outcome is not ApplyOutcome.APPLIED:
                settlements[position] = self._dead_letter(
                    batch[position], "; ".join(envelope.problems), envelope
                )
            elif envelope.problems:
                reason = "; ".join(envelope.problems)
                log.warning(
                    "applied %s in part (%s): %s",
                    envelope.message,
                    change.outcome.value,
                    reason,
                    extra={"correlation_id": envelope.operation_id},
                )
                self.metrics.dead_letters.inc(disposition=Disposition.APPLIED_IN_PART.value)
                settlements[position] = DeadLetter(reason, Disposition.APPLIED_IN_PART)
            else:
                settlements[position] = Ack(change.outcome.value)
        for (kind, outcome), count in tally.items():
            self.metrics.messages.inc(count, kind=kind, outcome=outcome)
        return [settlement or Ack() for settlement in settlements]

    def _dead_letter(
        self, delivered: Delivered, reason: str, envelope: Envelope | None = None
    ) -> DeadLetter:
        kind = envelope.kind.value if envelope else "unknown"
        self.metrics.messages.inc(kind=kind, outcome="dead_lettered")
        self.metrics.dead_letters.inc(disposition=Disposition.NOT_APPLIED.value)
        log.warning(
            "dead-lettered %s from %s: %s",
            delivered.routing_key,
            delivered.exchange,
            reason,
            extra={"correlation_id": envelope.operation_id if envelope else logged_id(delivered)},
        )
        return DeadLetter(reason)
