"""Attempts at a message whose processing fails unexpectedly (a defect it brings out, not bad
input and not an unreachable Redis): each failure sends it back for another attempt, counted in a
header of the message itself, so the count holds on classic and quorum queues alike and survives
restarts; the last allowed failure dead-letters it with the reason.

A consumer whose messages keep failing, with no success in between, is ``failing``: /ready says so.
"""

from __future__ import annotations

import logging

from operations.amqp.copies import failures_of
from operations.amqp.settlements import DeadLetter, Disposition, Failed, Retry, Settlement
from operations.envelope import Delivered
from operations.logs import logged_id
from operations.metrics import Registry

log = logging.getLogger("operations.amqp.consumer")

# A consumer is failing while this many messages in a row failed unexpectedly.
FAILING_AFTER = 2
_MAX_REASON_CHARACTERS = 500


class Attempts:
    def __init__(
        self, consumer: str, metrics: Registry, max_attempts: int, retry_delay_seconds: float
    ) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.retry_delay_seconds = retry_delay_seconds
        self._in_a_row = 0

    @property
    def failing(self) -> bool:
        """The last ``FAILING_AFTER`` messages failed unexpectedly, with no success since."""
        return self._in_a_row >= FAILING_AFTER

    def decided(self, delivered: Delivered, settlement: Settlement) -> Settlement:
        """A failure becomes a retry, or a dead letter once the message has failed
        ``max_attempts`` times; any other settlement is a success, and stays as it is."""
        if not isinstance(settlement, Failed):
            self._in_a_row = 0
            return settlement
        self._in_a_row += 1
        failures = failures_of(delivered) + 1
        if failures >= self.max_attempts:
            self.metrics.message_failures.inc(consumer=self.consumer, outcome="dead_lettered")
            self.metrics.dead_letters.inc(disposition=Disposition.NOT_APPLIED.value)
            log.error(
                "failed %d times, dead-lettered: %s",
                failures,
                settlement.reason,
                extra={"correlation_id": logged_id(delivered)},
            )
            return DeadLetter(f"failed {failures} times, the last with {settlement.reason}")
        self.metrics.message_failures.inc(consumer=self.consumer, outcome="retried")
        log.warning(
            "failed (%s); attempt %d of %d in %.1fs",
            settlement.reason,
            failures + 1,
            self.max_attempts,
            self.retry_delay_seconds,
            extra={"correlation_id": logged_id(delivered)},
        )
        return Retry(settlement.reason, self.retry_delay_seconds, None, failures)


def described(error: BaseException) -> str:
    """An exception as a dead letter's reason: its type and its message, cut to a bound."""
    text = str(error)
    if len(text) > _MAX_REASON_CHARACTERS:
        text = text[:_MAX_REASON_CHARACTERS] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
